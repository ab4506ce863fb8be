//! contrib/kubernetes: the manifests parse (python3's yaml, which
//! scripts/deps.sh installs) and say what the README promises: a DaemonSet
//! on every node whose init container installs into the host's plugin
//! directory, and an opt-in one for the dhcp daemon. No root needed.

mod common;

use std::process::Command;

use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/kubernetes");
/// What `make manifest IMAGE=...` replaces.
const IMAGE: &str = "localhost/cnibox:latest";

/// The YAML documents of a manifest, as JSON.
fn documents(file: &str) -> Vec<Value> {
    let script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let out = Command::new("python3")
        .args(["-c", script, &format!("{DIR}/{file}")])
        .output()
        .expect("python3 is needed (scripts/deps.sh installs python3-yaml)");
    assert!(out.status.success(), "{file} does not parse: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn daemonset(file: &str) -> Value {
    let docs = documents(file);
    assert_eq!(docs.len(), 1, "{file}: one document");
    let ds = docs[0].clone();
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["kind"], "DaemonSet");
    assert_eq!(ds["metadata"]["namespace"], "kube-system");
    assert_eq!(ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"]);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], serde_json::json!([{"operator": "Exists"}]), "{file}: every taint tolerated");
    for c in containers(pod) {
        assert_eq!(c["image"], IMAGE, "{file}: {}", c["name"]);
    }
    ds
}

fn containers(pod: &Value) -> Vec<&Value> {
    let list = |k: &str| pod[k].as_array().map(|a| a.iter().collect::<Vec<_>>()).unwrap_or_default();
    [list("initContainers"), list("containers")].concat()
}

/// The container's mount at `path`: the host directory and the mount.
fn host_path<'a>(pod: &'a Value, container: &'a Value, path: &str) -> (&'a str, &'a Value) {
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("{} mounts nothing at {path}", container["name"]));
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    (volume["hostPath"]["path"].as_str().unwrap(), mount)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect()
}

#[test]
fn the_install_daemonset() {
    let ds = daemonset("cnibox.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    // The image's entry point is `cnibox install`; these are its arguments.
    assert!(init["command"].is_null(), "the init container runs the entry point");
    let args = strings(&init["args"]);
    assert_eq!(args.last(), Some(&"/host/opt/cni/bin"));
    assert_eq!(host_path(pod, init, "/host/opt/cni/bin").0, "/opt/cni/bin");
    let conf_dir = args.iter().position(|a| *a == "--conf-dir").map(|i| args[i + 1]).unwrap();
    assert_eq!(host_path(pod, init, conf_dir).0, "/etc/cni/net.d");
    let main = &pod["containers"][0];
    assert_eq!(strings(&main["command"]), ["/cnibox", "pause"]);
}

#[test]
fn the_dhcp_daemonset() {
    let ds = daemonset("cnibox-dhcp.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    let daemon = &pod["containers"][0];
    let command = strings(&daemon["command"]);
    assert_eq!(command, ["/cnibox", "dhcp", "daemon", "-hostprefix", "/host"]);
    assert_eq!(daemon["securityContext"]["privileged"], true);
    // The socket the plugin on the host dials, under the prefix.
    assert_eq!(host_path(pod, daemon, "/host/run/cni").0, "/run/cni");
    // Netns paths the runtimes give, seen as they are mounted later.
    for dir in ["/run/netns", "/var/run/netns"] {
        let (host, mount) = host_path(pod, daemon, &format!("/host{dir}"));
        assert_eq!(host, dir);
        assert_eq!(mount["mountPropagation"], "HostToContainer", "{dir}");
    }
    assert_eq!(host_path(pod, daemon, "/host/proc").0, "/proc");
    // The default -statedir (the DHCPv6 DUID), kept on the node.
    assert_eq!(host_path(pod, daemon, "/host/var/lib/cni/dhcp").0, "/var/lib/cni/dhcp");
}

#[test]
fn kustomization_names_the_install_daemonset() {
    let docs = documents("kustomization.yaml");
    assert_eq!(docs[0]["resources"], serde_json::json!(["cnibox.yaml"]));
}
