//! Hostile input: every case gets the right CNI error code, and nothing is touched.
mod common;
use common::*;

const LO: &str = r#"{"cniVersion":"1.0.0","name":"hostile","type":"loopback"}"#;

fn every_plugin() -> Vec<String> {
    let out = std::process::Command::new(BIN).arg("--list").output().unwrap();
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).filter(|n| n != "cnitool").collect()
}

#[test]
fn bad_container_ids_and_interface_names_are_code_4() {
    for id in ["", "-leading-dash", "has/slash", "has space", "semi;colon", "a\u{e9}"] {
        let r = Call::new("loopback").container(id, "/run/netns/none", "eth0").run("ADD", LO);
        assert_eq!(r.err_code(), 4, "container id {id:?}");
    }
    for ifname in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-bytes-xx"] {
        let r = Call::new("loopback").container("c1", "/run/netns/none", ifname).run("ADD", LO);
        assert_eq!(r.err_code(), 4, "ifname {ifname:?}");
    }
}

#[test]
fn oversized_and_deeply_nested_input_is_code_6_for_every_plugin() {
    let big = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"x","pad":"{}"}}"#, "x".repeat(1 << 20));
    let deep =
        format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"x","a":{}1{}}}"#, "[".repeat(5000), "]".repeat(5000));
    for plugin in every_plugin() {
        let call = Call::new(&plugin).container("c1", "/run/netns/none", "eth0");
        assert_eq!(call.run("ADD", &big).err_code(), 6, "{plugin} with 1 MiB of stdin");
        assert_eq!(call.run("ADD", &deep).err_code(), 6, "{plugin} with deep JSON");
        assert_eq!(call.run("ADD", "\u{0}\u{1}garbage").err_code(), 6, "{plugin} with garbage");
        assert_eq!(call.run("ADD", r#"{"cniVersion":"42.0.0","name":"n"}"#).err_code(), 1, "{plugin} version");
        // VERSION always answers, whatever the plugin.
        let v = call.run("VERSION", r#"{"cniVersion":"1.0.0"}"#).ok();
        assert!(v["supportedVersions"].as_array().unwrap().len() >= 7, "{plugin}");
    }
}

#[test]
fn a_netns_path_that_is_not_a_namespace_is_refused() {
    if not_root() {
        return;
    }
    let dir = TempDir::new("hostile");
    let file = dir.path().join("not-a-netns");
    std::fs::write(&file, "").unwrap();
    let call = Call::new("loopback").container("c1", file.to_str().unwrap(), "lo");
    let r = call.run("ADD", LO);
    assert_ne!(r.code, 0);
    assert!(r.json()["msg"].as_str().unwrap().contains("netns"), "{}", r.stdout);
    assert_eq!(std::fs::read(&file).unwrap(), b"");
}

#[test]
fn errors_are_the_only_thing_on_stdout() {
    let r = Call::new("loopback").container("c1", "/run/netns/none", "lo").run("ADD", "{");
    let v = r.json();
    assert_eq!(v["code"], 6);
    assert!(v["msg"].is_string());
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(r.stdout.lines().count(), 1);
}
