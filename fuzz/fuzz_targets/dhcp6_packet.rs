#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cnibox::fuzzing::dhcp6_packet(data));
