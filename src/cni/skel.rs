//! The plugin side of the protocol: environment + stdin in, one JSON
//! document on stdout. This is the only code that writes to stdout.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::args::CniArgs;
use super::error::{CniError, DECODE_FAILURE, INCOMPATIBLE_VERSION};
use super::lenient;
use super::types::{CniResult, NetConf};
use super::version;

/// What a plugin applet implements. Applets never print: they return
/// values and errors, and the skel renders them.
pub trait Applet: Sync {
    fn add(&self, cmd: &Command) -> Result<CniResult, CniError>;
    /// Idempotent and best effort: succeeds when things are already gone.
    fn del(&self, cmd: &Command) -> Result<(), CniError>;
    fn check(&self, cmd: &Command) -> Result<(), CniError>;
    fn gc(&self, _cmd: &Command) -> Result<(), CniError> {
        Ok(())
    }
    fn status(&self, _cmd: &Command) -> Result<(), CniError> {
        Ok(())
    }
    /// Parses and validates the applet's configuration without touching the
    /// system: used by fuzzing and by `cnibox doctor`.
    fn validate(&self, _cmd: &Command) -> Result<(), CniError> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Verb {
    pub fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "ADD" => Verb::Add,
            "DEL" => Verb::Del,
            "CHECK" => Verb::Check,
            "VERSION" => Verb::Version,
            "GC" => Verb::Gc,
            "STATUS" => Verb::Status,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
            Verb::Version => "VERSION",
            Verb::Gc => "GC",
            Verb::Status => "STATUS",
        }
    }

    /// The spec's table of required environment variables per verb.
    /// (CNI_ARGS is always optional; CNI_NETNS is optional on DEL.)
    pub fn required_env(self) -> &'static [&'static str] {
        match self {
            Verb::Add | Verb::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
            Verb::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Verb::Gc | Verb::Status => &["CNI_PATH"],
            Verb::Version => &[],
        }
    }

    /// The minimal spec version that defines the verb.
    fn since(self) -> &'static str {
        match self {
            Verb::Check => "0.4.0",
            Verb::Gc | Verb::Status => "1.1.0",
            _ => "0.1.0",
        }
    }
}

/// One plugin invocation, fully parsed.
#[derive(Debug, Clone)]
pub struct Command {
    pub verb: Verb,
    pub container_id: String,
    /// Empty on a DEL whose netns is already gone.
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS as given: parsed only by the applets that read it (`args`),
    /// as the reference's skel never parses it.
    pub raw_args: String,
    pub path: Vec<PathBuf>,
    /// The configuration bytes as received, for delegates.
    pub stdin: Vec<u8>,
    pub config: Value,
    pub conf: NetConf,
    /// The negotiated spec version results are written in.
    pub version: String,
}

/// Largest configuration accepted on stdin.
pub const MAX_STDIN: usize = 1 << 20;

/// Container IDs as the reference accepts them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_env(format!("invalid characters in container ID {id:?}")))
    }
}

/// Interface names the kernel accepts: 1..=15 bytes, no '/', ':' or
/// whitespace, and not "." or "..".
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > 15 {
        "is longer than 15 bytes"
    } else if name == "." || name == ".." {
        "is '.' or '..'"
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        "contains '/', ':' or whitespace"
    } else {
        return Ok(());
    };
    Err(CniError::invalid_env(format!("interface name {name:?} {why}")))
}

impl Command {
    /// Builds a command from an environment lookup and the stdin bytes.
    /// On error, also returns the version the error should be written in.
    pub fn from_env(getenv: impl Fn(&str) -> Option<String>, stdin: Vec<u8>) -> Result<Command, (CniError, String)> {
        // Errors found before the configuration is read are written in the
        // version it asks for, when it names one we speak.
        let fail = |e: CniError| (e, error_version(&stdin));
        let verb_name = getenv("CNI_COMMAND").unwrap_or_default();
        let verb = Verb::parse(&verb_name)
            .ok_or_else(|| fail(CniError::invalid_env(format!("unknown CNI_COMMAND {verb_name:?}"))))?;
        let missing: Vec<&str> =
            verb.required_env().iter().copied().filter(|k| getenv(k).is_none_or(|v| v.is_empty())).collect();
        if !missing.is_empty() {
            return Err(fail(CniError::invalid_env(format!("required env variables {missing:?} missing"))));
        }
        let container_id = getenv("CNI_CONTAINERID").unwrap_or_default();
        let ifname = getenv("CNI_IFNAME").unwrap_or_default();
        if matches!(verb, Verb::Add | Verb::Del | Verb::Check) {
            validate_container_id(&container_id).map_err(fail)?;
            validate_ifname(&ifname).map_err(fail)?;
        }
        let raw_args = getenv("CNI_ARGS").unwrap_or_default();
        let path =
            getenv("CNI_PATH").unwrap_or_default().split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect();

        if stdin.len() > MAX_STDIN {
            return Err(fail(CniError::decode(format!("network configuration is larger than {MAX_STDIN} bytes"))));
        }
        let config: Value = if verb == Verb::Version && stdin.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(&stdin).map_err(|e| {
                fail(CniError::new(DECODE_FAILURE, "failed to parse network configuration").with_details(e.to_string()))
            })?
        };
        if !config.is_object() {
            return Err(fail(CniError::decode("network configuration is not a JSON object")));
        }
        let conf: NetConf = lenient::parse_config(&config, "network configuration").map_err(fail)?;
        let version = if verb == Verb::Version && conf.cni_version.is_empty() {
            version::CURRENT.to_string()
        } else {
            version::negotiate(&conf.cni_version, &conf.cni_versions).map_err(fail)?
        };
        if !version::at_least(&version, verb.since()) {
            let e = CniError::new(
                INCOMPATIBLE_VERSION,
                format!("config version {version} does not allow {}", verb.as_str()),
            )
            .with_details(format!("{} needs cniVersion {} or later", verb.as_str(), verb.since()));
            return Err((e, version));
        }
        Ok(Command {
            verb,
            container_id,
            netns: getenv("CNI_NETNS").unwrap_or_default(),
            ifname,
            raw_args,
            path,
            stdin,
            config,
            conf,
            version,
        })
    }

    /// CNI_ARGS, parsed (code 7 for a malformed pair).
    pub fn args(&self) -> Result<CniArgs, CniError> {
        CniArgs::parse(&self.raw_args)
    }

    /// The applet's own view of the configuration (keys matched leniently).
    pub fn parse_config<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        lenient::parse_config(&self.config, "network configuration")
    }

    /// The previous plugin's result, converted to the current shape.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match &self.conf.prev_result {
            Some(v) if !v.is_null() => version::parse_result(v, &self.version).map(Some),
            _ => Ok(None),
        }
    }

    /// `runtimeConfig.<key>` parsed into `T`, if present.
    pub fn runtime_config<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CniError> {
        let Some(rc) = self.conf.runtime_config.as_ref().and_then(Value::as_object) else {
            return Ok(None);
        };
        match rc.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
            Some((_, v)) if !v.is_null() => lenient::parse_config(v, &format!("runtimeConfig.{key}")).map(Some),
            _ => Ok(None),
        }
    }

    /// `args.cni.<key>` parsed into `T`, if present (the CNI "args" convention).
    pub fn args_cni<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CniError> {
        let v = self.conf.args.as_ref().and_then(|a| a.get("cni")).and_then(|c| c.get(key));
        match v {
            Some(v) if !v.is_null() => lenient::parse_config(v, &format!("args.cni.{key}")).map(Some),
            _ => Ok(None),
        }
    }
}

/// What a person sees when running a plugin by hand.
pub fn about(name: &str) -> String {
    format!(
        "CNI {name} plugin (cnibox v{})\nCNI protocol versions supported: {}",
        env!("CARGO_PKG_VERSION"),
        version::SUPPORTED.join(", ")
    )
}

/// Runs `applet` as a runtime would: reads env and stdin, writes stdout,
/// returns the exit code.
pub fn run(name: &str, applet: &dyn Applet) -> i32 {
    if std::env::var_os("CNI_COMMAND").is_none() && std::io::stdin().is_terminal() {
        eprintln!("{}", about(name));
        return 0;
    }
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_STDIN as u64 + 1).read_to_end(&mut stdin) {
        return emit_error(
            &CniError::io("failed to read network configuration").with_details(e.to_string()),
            version::CURRENT,
        );
    }
    let (output, code) = dispatch(applet, |k| std::env::var(k).ok(), stdin);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(output.as_bytes());
    let _ = out.flush();
    code
}

/// The testable core of `run`: returns what goes to stdout and the exit code.
pub fn dispatch(applet: &dyn Applet, getenv: impl Fn(&str) -> Option<String>, stdin: Vec<u8>) -> (String, i32) {
    let cmd = match Command::from_env(getenv, stdin) {
        Ok(cmd) => cmd,
        Err((e, version)) => return (render_error(&e, &version), 1),
    };
    log::debug!("{} container={} ifname={} netns={}", cmd.verb.as_str(), cmd.container_id, cmd.ifname, cmd.netns);
    let outcome = match cmd.verb {
        Verb::Version => return (version::version_reply(&cmd.version).to_string() + "\n", 0),
        Verb::Add => applet.add(&cmd).map(Some),
        Verb::Del => applet.del(&cmd).map(|_| None),
        Verb::Check => applet.check(&cmd).map(|_| None),
        Verb::Gc => applet.gc(&cmd).map(|_| None),
        Verb::Status => applet.status(&cmd).map(|_| None),
    };
    match outcome {
        Ok(Some(result)) => (version::render(&result, &cmd.version).to_string() + "\n", 0),
        Ok(None) => (String::new(), 0),
        Err(e) => {
            log::error!("{} failed: {e}", cmd.verb.as_str());
            (render_error(&e, &cmd.version), 1)
        }
    }
}

/// The version an error found before the configuration was read is written
/// in: the configuration's own `cniVersion` when it has one we support,
/// else the current one.
fn error_version(stdin: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Versioned {
        #[serde(rename = "cniVersion", default)]
        cni_version: String,
    }
    match serde_json::from_slice::<Versioned>(stdin) {
        Ok(v) if version::SUPPORTED.contains(&v.cni_version.as_str()) => v.cni_version,
        _ => version::CURRENT.to_string(),
    }
}

fn render_error(e: &CniError, version: &str) -> String {
    e.to_json(version).to_string() + "\n"
}

fn emit_error(e: &CniError, version: &str) -> i32 {
    let _ = std::io::stdout().write_all(render_error(e, version).as_bytes());
    1
}

/// A Command as a runtime would make it for container c1, eth0 in /x: the
/// fixture of unit tests that parse configs.
#[cfg(test)]
pub fn test_command(verb: &str, config: &str, cni_args: &str) -> Command {
    let env = [
        ("CNI_COMMAND", verb),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", cni_args),
    ];
    let getenv = |k: &str| env.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string());
    Command::from_env(getenv, config.as_bytes().to_vec()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Echo;
    impl Applet for Echo {
        fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
            Ok(cmd.prev_result()?.unwrap_or_default())
        }
        fn del(&self, _: &Command) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Command) -> Result<(), CniError> {
            Err(CniError::io("boom"))
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn full(verb: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", verb.to_string()),
            ("CNI_CONTAINERID", "abc".into()),
            ("CNI_NETNS", "/var/run/netns/x".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", "/opt/cni/bin".into()),
        ]
    }

    fn call(pairs: &[(&str, String)], stdin: &str) -> (Value, i32) {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (out, code) = dispatch(&Echo, env(&pairs), stdin.as_bytes().to_vec());
        (if out.is_empty() { Value::Null } else { serde_json::from_str(&out).unwrap() }, code)
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"n","type":"echo"}"#;

    #[test]
    fn required_env_per_verb() {
        for verb in ["ADD", "DEL", "CHECK", "GC", "STATUS"] {
            for key in Verb::parse(verb).unwrap().required_env() {
                let pairs: Vec<_> = full(verb).into_iter().filter(|(k, _)| k != key).collect();
                let (out, code) = call(&pairs, r#"{"cniVersion":"1.1.0","name":"n","type":"echo"}"#);
                assert_eq!((code, out["code"].as_u64()), (1, Some(4)), "{verb} without {key}");
            }
        }
        // DEL without a netns is fine.
        let pairs: Vec<_> = full("DEL").into_iter().filter(|(k, _)| *k != "CNI_NETNS").collect();
        assert_eq!(call(&pairs, CONF).1, 0);
        assert_eq!(call(&[("CNI_COMMAND", "VERSION".into())], "").1, 0);
        assert_eq!(call(&[("CNI_COMMAND", "BOGUS".into())], CONF).0["code"], 4);
    }

    #[test]
    fn validates_ids_and_names() {
        for bad in ["", "-x", "a/b", "a b", "a:b"] {
            assert!(validate_container_id(bad).is_err(), "{bad:?}");
        }
        validate_container_id("0123abc_.-x").unwrap();
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\tb", "0123456789abcdef"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
        validate_ifname("0123456789abcde").unwrap();
        let mut pairs = full("ADD");
        pairs[3].1 = "a/b".into();
        assert_eq!(call(&pairs, CONF).0["code"], 4);
    }

    #[test]
    fn version_reply() {
        let (out, code) = call(&[("CNI_COMMAND", "VERSION".into())], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(code, 0);
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["supportedVersions"].as_array().unwrap().len(), version::SUPPORTED.len());
        let (out, _) = call(&[("CNI_COMMAND", "VERSION".into())], "");
        assert_eq!(out["cniVersion"], "1.1.0");
    }

    #[test]
    fn errors_and_versions() {
        let (out, code) = call(&full("ADD"), "{not json");
        assert_eq!((code, out["code"].as_u64()), (1, Some(6)));
        let (out, _) = call(&full("ADD"), r#"{"cniVersion":"7.0.0","name":"n","type":"echo"}"#);
        assert_eq!(out["code"], 1);
        let (out, _) = call(&full("GC"), CONF);
        assert_eq!(out["code"], 1);
        let (out, _) = call(&full("CHECK"), r#"{"cniVersion":"0.3.1","name":"n","type":"echo"}"#);
        assert_eq!(out["code"], 1);
        let (out, _) = call(&full("CHECK"), CONF);
        assert_eq!((out["code"].as_u64(), out["cniVersion"].as_str()), (Some(5), Some("1.0.0")));
        let (out, _) = call(&full("ADD"), "[1]");
        assert_eq!(out["code"], 6);
        let big = format!(r#"{{"cniVersion":"1.0.0","name":"{}"}}"#, "x".repeat(MAX_STDIN));
        assert_eq!(call(&full("ADD"), &big).0["code"], 6);
        let deep = "[".repeat(10000);
        assert_eq!(call(&full("ADD"), &deep).0["code"], 6);
    }

    #[test]
    fn result_written_in_the_configs_version() {
        let conf = r#"{"cniVersion":"0.2.0","name":"n","type":"echo","prevResult":
            {"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1"}]}}"#;
        let (out, code) = call(&full("ADD"), conf);
        assert_eq!(code, 0);
        assert_eq!(out["cniVersion"], "0.2.0");
        assert_eq!(out["ip4"]["ip"], "10.0.0.2/24");
        let conf = r#"{"cniVersions":["0.3.1","1.0.0"],"cniVersion":"0.3.1","name":"n","type":"echo"}"#;
        assert_eq!(call(&full("ADD"), conf).0["cniVersion"], "1.0.0");
    }

    #[test]
    fn runtime_config_and_args() {
        let cmd = Command::from_env(
            env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/a:/b"),
            ]),
            br#"{"cniVersion":"1.0.0","name":"n","type":"t","RuntimeConfig":{"MAC":"aa:bb:cc:dd:ee:ff"},
                "args":{"cni":{"ips":["10.0.0.9"]}}}"#
                .to_vec(),
        )
        .unwrap();
        assert_eq!(cmd.runtime_config::<String>("mac").unwrap().unwrap(), "aa:bb:cc:dd:ee:ff");
        assert_eq!(cmd.args_cni::<Vec<String>>("ips").unwrap().unwrap(), vec!["10.0.0.9"]);
        assert_eq!(cmd.path.len(), 2);
    }
}
