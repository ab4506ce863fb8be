#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cnibox::fuzzing::prev_result(data));
