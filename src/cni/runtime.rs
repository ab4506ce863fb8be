//! The runtime side of CNI, as libcni does it: loading network configs from
//! a directory, running a plugin chain as separate processes, and the
//! per-attachment result cache (same layout as libcni, so a node can switch
//! between cnibox's cnitool and a Go runtime without losing state).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::{CniError, INCOMPATIBLE_VERSION};
use super::invoke::{self, CniEnv};
use super::skel::{validate_container_id, validate_ifname, Verb};
use super::version;
use crate::util::base64;
use crate::util::sha512;

pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";
/// The `kind` libcni writes in every cache file.
pub const CACHE_KIND: &str = "cniCacheV1";
/// Extensions of network config files, in libcni's load order: every
/// `.conflist` first, then the single-plugin `.conf` and `.json` files.
pub const CONF_EXTENSIONS: [&[&str]; 2] = [&["conflist"], &["conf", "json"]];

/// A network configuration list (a `.conf` becomes a one-plugin list).
#[derive(Debug, Clone)]
pub struct NetworkList {
    pub name: String,
    /// The version the chain runs with (highest usable of cniVersion/cniVersions).
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    /// Each plugin's own configuration object.
    pub plugins: Vec<Value>,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
}

fn bad(msg: impl Into<String>) -> CniError {
    CniError::invalid_config(msg)
}

/// libcni accepts booleans and the strings "true"/"false" for the list flags.
fn read_flag(obj: &Map<String, Value>, key: &str) -> Result<bool, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(bad(format!("invalid value {other} for {key}"))),
    }
}

/// The version a list runs with: the highest supported one among
/// `cniVersions` and `cniVersion` (versions newer than ours are ignored, as
/// libcni does).
fn list_version(obj: &Map<String, Value>) -> Result<String, CniError> {
    let single = match obj.get("cniVersion") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(bad(format!("invalid cniVersion {other}"))),
    };
    let Some(many) = obj.get("cniVersions") else {
        return Ok(single);
    };
    let many = many.as_array().ok_or_else(|| bad("cniVersions is not a list"))?;
    let mut candidates: Vec<String> = Vec::new();
    for v in many.iter().chain(std::iter::once(&Value::String(single.clone()))) {
        let v = v.as_str().ok_or_else(|| bad(format!("invalid cniVersions entry {v}")))?;
        if version::is_supported(v) {
            candidates.push(v.to_string());
        }
    }
    candidates.sort_by_key(|v| version::parse(v));
    candidates.pop().ok_or_else(|| {
        CniError::new(INCOMPATIBLE_VERSION, "no supported version in cniVersions")
            .with_details(format!("cnibox supports {:?}", version::SUPPORTED))
    })
}

fn check_plugin(plugin: &Value, index: usize) -> Result<(), CniError> {
    match plugin.get("type") {
        Some(Value::String(t)) if !t.is_empty() => Ok(()),
        _ => Err(bad(format!("plugin {index} has no 'type'"))),
    }
}

/// What a config file holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// A list or a single plugin config, whichever the JSON is.
    Either,
    /// A list (a `.conflist`): its plugins may also come from files.
    List,
}

impl NetworkList {
    /// Parses a list (`{"name","cniVersion","plugins":[...]}`) or a single
    /// plugin config (`{"name","type",...}`), whichever the JSON is.
    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkList, CniError> {
        NetworkList::parse(bytes, Shape::Either)
    }

    fn parse(bytes: &[u8], shape: Shape) -> Result<NetworkList, CniError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode("invalid JSON in network configuration").with_details(e.to_string()))?;
        let obj = value.as_object().ok_or_else(|| CniError::decode("network configuration is not a JSON object"))?;
        let name = match obj.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => return Err(bad("network configuration has no 'name'")),
        };
        let cni_version = list_version(obj)?;
        if !cni_version.is_empty() && !version::is_supported(&cni_version) {
            return Err(CniError::new(INCOMPATIBLE_VERSION, format!("unsupported cniVersion {cni_version:?}"))
                .with_details(format!("cnibox supports {:?}", version::SUPPORTED)));
        }
        let plugins = match obj.get("plugins") {
            // SPEC 1.1: a list without `plugins` takes them from `<dir>/<name>/*.conf`.
            None if shape == Shape::List => Vec::new(),
            None => {
                // A single plugin config: the whole object is the plugin.
                check_plugin(&value, 0)?;
                vec![value.clone()]
            }
            Some(Value::Array(list)) if !list.is_empty() => {
                for (i, p) in list.iter().enumerate() {
                    if !p.is_object() {
                        return Err(bad(format!("plugin {i} is not a JSON object")));
                    }
                    check_plugin(p, i)?;
                }
                list.clone()
            }
            Some(_) => return Err(bad("'plugins' must be a non-empty list")),
        };
        Ok(NetworkList {
            name,
            cni_version,
            disable_check: read_flag(obj, "disableCheck")?,
            disable_gc: read_flag(obj, "disableGC")?,
            plugins,
            source: None,
        })
    }

    /// Reads one config file. A list may also pick up plugin configs from
    /// `<dir>/<network name>/*.conf` (libcni 1.2+), unless it sets
    /// `loadOnlyInlinedPlugins`.
    pub fn from_file(path: &Path) -> Result<NetworkList, CniError> {
        let bytes = std::fs::read(path)
            .map_err(|e| CniError::io(format!("cannot read {}", path.display())).with_details(e.to_string()))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let shape = if path.extension().is_some_and(|e| e == "conflist") { Shape::List } else { Shape::Either };
        let mut list = NetworkList::parse(&bytes, shape)?;
        let is_list = shape == Shape::List || value.get("plugins").is_some();
        let inline_only = value.as_object().map(|o| read_flag(o, "loadOnlyInlinedPlugins")).transpose()?;
        if inline_only == Some(true) && value.get("plugins").is_none() {
            return Err(bad(format!(
                "{}: loadOnlyInlinedPlugins is true and there is no 'plugins' list",
                path.display()
            )));
        }
        if is_list && inline_only != Some(true) {
            let plugin_dir = path.parent().unwrap_or(Path::new(".")).join(&list.name);
            for file in files_with(&plugin_dir, &["conf"]) {
                let bytes = std::fs::read(&file)
                    .map_err(|e| CniError::io(format!("cannot read {}", file.display())).with_details(e.to_string()))?;
                let plugin: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    CniError::decode(format!("invalid JSON in {}", file.display())).with_details(e.to_string())
                })?;
                check_plugin(&plugin, list.plugins.len())?;
                list.plugins.push(plugin);
            }
            if list.plugins.is_empty() {
                return Err(bad(format!(
                    "{}: no plugins, in the file nor in {}/*.conf",
                    path.display(),
                    plugin_dir.display()
                )));
            }
        }
        list.source = Some(path.to_path_buf());
        Ok(list)
    }

    /// The list as JSON, every plugin inlined: what the cache stores, so a
    /// later DEL or CHECK runs exactly what ADD ran.
    pub fn to_json(&self) -> Value {
        let mut obj = json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "plugins": self.plugins,
            "loadOnlyInlinedPlugins": true,
        });
        if self.disable_check {
            obj["disableCheck"] = true.into();
        }
        if self.disable_gc {
            obj["disableGC"] = true.into();
        }
        obj
    }

    pub fn plugin_type(plugin: &Value) -> &str {
        plugin.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// `type="bridge"` (plus the plugin's own name if it has one), as libcni
    /// names plugins in errors.
    pub fn describe(plugin: &Value) -> String {
        let mut s = format!("type={:?}", Self::plugin_type(plugin));
        if let Some(name) = plugin.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            s += &format!(" name={name:?}");
        }
        s
    }
}

/// Regular files (or links to them) in `dir` with one of `extensions`,
/// sorted by name. A missing directory has none.
pub fn files_with(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e)))
        .collect();
    files.sort();
    files
}

/// Every config file of `dir` in libcni's load order (`.conflist` files by
/// name, then `.conf` and `.json` files by name), each parsed (or why not).
pub fn load_all(dir: &Path) -> Vec<(PathBuf, Result<NetworkList, CniError>)> {
    let files = CONF_EXTENSIONS.iter().flat_map(|extensions| files_with(dir, extensions));
    files.map(|f| (f.clone(), NetworkList::from_file(&f))).collect()
}

/// The network called `name`: the first file in load order (`load_all`)
/// whose network has that name, as libcni's LoadConfList picks it. Files
/// that do not parse are skipped (and named in the error if nothing
/// matches).
pub fn load_network(dir: &Path, name: &str) -> Result<NetworkList, CniError> {
    let mut broken = Vec::new();
    let all = load_all(dir);
    let count = all.len();
    for (file, parsed) in all {
        match parsed {
            Ok(list) if list.name == name => return Ok(list),
            Ok(_) => {}
            Err(e) => {
                log::warn!("skipping {}: {e}", file.display());
                broken.push(format!("{}: {e}", file.display()));
            }
        }
    }
    let mut err = CniError::invalid_config(if count == 0 {
        format!("no network configurations found in {}", dir.display())
    } else {
        format!("no network configuration named {name:?} in {}", dir.display())
    });
    if !broken.is_empty() {
        err = err.with_details(format!("unreadable files: {}", broken.join("; ")));
    }
    Err(err)
}

/// One container's attachment to a network, as the runtime describes it.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `ipRanges`, ...), offered to
    /// plugins that declare the capability.
    pub capability_args: Map<String, Value>,
}

impl Attachment {
    /// The container ID the reference cnitool uses for a netns path:
    /// `cnitool-` and the first 10 bytes of SHA-512(absolute path), in hex.
    pub fn cnitool_container_id(netns_abs: &str) -> String {
        format!("cnitool-{}", sha512::hex(&sha512::sha512(netns_abs.as_bytes())[..10]))
    }

    pub fn args_string(&self) -> String {
        self.args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
    }
}

/// Network names as libcni accepts them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (the
/// name is part of cache file names, so nothing else may pass).
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!("invalid characters in network name {name:?}")))
    }
}

fn validate_attachment(list: &NetworkList, att: &Attachment) -> Result<(), CniError> {
    validate_network_name(&list.name)?;
    validate_container_id(&att.container_id)?;
    validate_ifname(&att.ifname)
}

/// Parses CNI_ARGS as the reference cnitool does: `K=V;K=V`, no empty parts.
pub fn parse_cni_args(args: &str) -> Result<Vec<(String, String)>, CniError> {
    args.split(';')
        .map(|pair| match pair.split('=').collect::<Vec<_>>()[..] {
            [k, v] if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CniError::invalid_env(format!("invalid CNI_ARGS pair {pair:?}"))),
        })
        .collect()
}

/// The stdin one plugin of `list` gets: its own keys plus the list's name
/// and version, the previous result, and `runtimeConfig` holding exactly
/// the capability args the plugin declares (libcni's rules: the injected
/// object replaces the plugin's own only when there is something to inject).
pub fn plugin_config(
    list: &NetworkList,
    plugin: &Value,
    prev_result: Option<&Value>,
    caps: &Map<String, Value>,
) -> Value {
    let mut conf = plugin.clone();
    let Some(obj) = conf.as_object_mut() else {
        return conf;
    };
    obj.insert("name".into(), list.name.clone().into());
    obj.insert("cniVersion".into(), list.cni_version.clone().into());
    if let Some(prev) = prev_result {
        obj.insert("prevResult".into(), prev.clone());
    }
    let runtime_config = runtime_config_for(plugin, caps);
    if !runtime_config.is_empty() {
        obj.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    conf
}

/// The capability args a plugin declares with `capabilities: {"x": true}`.
pub fn runtime_config_for(plugin: &Value, caps: &Map<String, Value>) -> Map<String, Value> {
    let declared = plugin.get("capabilities").and_then(Value::as_object);
    declared
        .into_iter()
        .flatten()
        .filter(|(_, on)| on.as_bool() == Some(true))
        .filter_map(|(cap, _)| caps.get(cap).filter(|v| !v.is_null()).map(|v| (cap.clone(), v.clone())))
        .collect()
}

/// One cache file, in libcni's layout
/// (`<cache dir>/results/<network>-<container ID>-<ifname>`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CachedAttachment {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The config bytes, base64 as Go encodes []byte.
    pub config: String,
    #[serde(rename = "ifName")]
    pub if_name: String,
    #[serde(rename = "networkName")]
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    #[serde(rename = "capabilityArgs", default, skip_serializing_if = "Map::is_empty")]
    pub capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl CachedAttachment {
    /// The list as it was at ADD time, if the cache holds one.
    pub fn network(&self) -> Option<NetworkList> {
        let bytes = base64::decode(&self.config)?;
        NetworkList::from_bytes(&bytes).ok()
    }

    pub fn attachment(&self) -> Attachment {
        Attachment {
            container_id: self.container_id.clone(),
            netns: self.netns.clone(),
            ifname: self.if_name.clone(),
            args: self.cni_args.iter().map(|[k, v]| (k.clone(), v.clone())).collect(),
            capability_args: self.capability_args.clone(),
        }
    }
}

/// The result cache under a cache directory (default /var/lib/cni).
#[derive(Debug, Clone)]
pub struct Cache {
    pub dir: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    pub fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }

    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.results_dir().join(format!("{network}-{container_id}-{ifname}"))
    }

    pub fn read(&self, network: &str, att: &Attachment) -> Option<CachedAttachment> {
        let bytes = std::fs::read(self.path(network, &att.container_id, &att.ifname)).ok()?;
        let entry: CachedAttachment = serde_json::from_slice(&bytes).ok()?;
        (entry.kind == CACHE_KIND).then_some(entry)
    }

    /// Written to a temporary file and renamed, so readers never see half.
    pub fn write(&self, list: &NetworkList, att: &Attachment, result: &Value) -> Result<(), CniError> {
        let entry = CachedAttachment {
            kind: CACHE_KIND.into(),
            container_id: att.container_id.clone(),
            config: base64::encode(list.to_json().to_string().as_bytes()),
            if_name: att.ifname.clone(),
            network_name: list.name.clone(),
            netns: att.netns.clone(),
            cni_args: att.args.iter().map(|(k, v)| [k.clone(), v.clone()]).collect(),
            capability_args: att.capability_args.clone(),
            result: Some(result.clone()),
        };
        let path = self.path(&list.name, &att.container_id, &att.ifname);
        let io = |e: std::io::Error| {
            CniError::io(format!("cannot write cache file {}", path.display())).with_details(e.to_string())
        };
        std::fs::create_dir_all(self.results_dir()).map_err(io)?;
        // Dot-prefixed: no network name starts with a dot, so `list` skips it.
        let tmp = self.results_dir().join(format!(".tmp{}-{}", std::process::id(), list.name));
        let bytes = serde_json::to_vec(&entry).map_err(|e| CniError::internal(e.to_string()))?;
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)
    }

    pub fn remove(&self, network: &str, att: &Attachment) {
        let _ = std::fs::remove_file(self.path(network, &att.container_id, &att.ifname));
    }

    /// Every readable cache entry, sorted by file name.
    pub fn list(&self) -> Vec<CachedAttachment> {
        let Ok(entries) = std::fs::read_dir(self.results_dir()) else {
            return Vec::new();
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        names.sort();
        names
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|b| serde_json::from_slice::<CachedAttachment>(&b).ok())
            .filter(|e| e.kind == CACHE_KIND && !e.if_name.is_empty() && !e.network_name.is_empty())
            .collect()
    }
}

/// Runs plugin chains: where plugins are, where results are cached, and
/// how long one plugin may take.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub cni_path: Vec<PathBuf>,
    pub cache: Cache,
    pub timeout: Duration,
}

/// What GC did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Attachments whose netns was gone, deleted from their cached config.
    pub stale_deleted: Vec<String>,
    /// The attachments sent as `cni.dev/valid-attachments`.
    pub valid: Vec<Value>,
}

impl Runtime {
    /// CNI_PATH, CNI_CACHE_DIR (default /var/lib/cni) and CNI_TIMEOUT
    /// (seconds, default 120) from the environment.
    pub fn from_env() -> Runtime {
        let cni_path = std::env::var("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        let cache_dir = std::env::var("CNI_CACHE_DIR").ok().filter(|d| !d.is_empty());
        Runtime {
            cni_path,
            cache: Cache::new(cache_dir.unwrap_or_else(|| DEFAULT_CACHE_DIR.into())),
            timeout: invoke::timeout_from_env().unwrap_or(invoke::DEFAULT_RUNTIME_TIMEOUT),
        }
    }

    /// Runs one plugin as a process, for at most `timeout`. Returns its
    /// result for ADD.
    pub fn exec(
        &self,
        plugin_type: &str,
        verb: Verb,
        att: &Attachment,
        config: &Value,
    ) -> Result<Option<Value>, CniError> {
        let args = att.args_string();
        let env = CniEnv {
            verb,
            container_id: &att.container_id,
            netns: &att.netns,
            ifname: &att.ifname,
            args: &args,
            path: &self.cni_path,
        };
        invoke::exec_plugin(plugin_type, &env, config.to_string().as_bytes(), Some(self.timeout))
    }

    /// ADD: every plugin in order, each given the previous one's result;
    /// the final result is cached. A failed ADD runs DEL on the plugins
    /// that ran, in reverse, so nothing is left behind.
    pub fn add(&self, list: &NetworkList, att: &Attachment) -> Result<Value, CniError> {
        validate_attachment(list, att)?;
        let mut result: Option<Value> = None;
        for (i, plugin) in list.plugins.iter().enumerate() {
            let conf = plugin_config(list, plugin, result.as_ref(), &att.capability_args);
            match self.exec(NetworkList::plugin_type(plugin), Verb::Add, att, &conf) {
                Ok(r) => result = r,
                Err(e) => {
                    let err = in_plugin(e, plugin, "add");
                    let undo = NetworkList { plugins: list.plugins[..=i].to_vec(), ..list.clone() };
                    if let Err(undo_err) = self.del_chain(&undo, att, result.as_ref()) {
                        log::warn!("cleaning up after the failed ADD: {undo_err}");
                    }
                    return Err(err);
                }
            }
        }
        let result = result.unwrap_or_else(|| json!({ "cniVersion": list.cni_version }));
        self.cache.write(list, att, &result)?;
        Ok(result)
    }

    /// CHECK: every plugin in order with the cached result as prevResult.
    pub fn check(&self, list: &NetworkList, att: &Attachment) -> Result<(), CniError> {
        validate_attachment(list, att)?;
        if !version::at_least(&list.cni_version, "0.4.0") {
            return Err(CniError::new(
                INCOMPATIBLE_VERSION,
                format!("configuration version {:?} does not support CHECK", list.cni_version),
            ));
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self.cache.read(&list.name, att).ok_or_else(|| {
            CniError::new(
                super::error::UNKNOWN_CONTAINER,
                format!("no cached result for {} in network {:?}: was it added?", att.container_id, list.name),
            )
        })?;
        for plugin in &list.plugins {
            let conf = plugin_config(list, plugin, cached.result.as_ref(), &att.capability_args);
            self.exec(NetworkList::plugin_type(plugin), Verb::Check, att, &conf)
                .map_err(|e| in_plugin(e, plugin, "check"))?;
        }
        Ok(())
    }

    /// DEL: every plugin in reverse with the cached result (if any). Keeps
    /// going past failures; the cache entry goes only when all succeeded.
    pub fn del(&self, list: &NetworkList, att: &Attachment) -> Result<(), CniError> {
        validate_attachment(list, att)?;
        let cached = self.cache.read(&list.name, att).and_then(|c| c.result);
        let prev = if version::at_least(&list.cni_version, "0.4.0") { cached } else { None };
        self.del_chain(list, att, prev.as_ref())?;
        self.cache.remove(&list.name, att);
        Ok(())
    }

    fn del_chain(&self, list: &NetworkList, att: &Attachment, prev: Option<&Value>) -> Result<(), CniError> {
        let mut errors = Vec::new();
        for plugin in list.plugins.iter().rev() {
            let conf = plugin_config(list, plugin, prev, &att.capability_args);
            if let Err(e) = self.exec(NetworkList::plugin_type(plugin), Verb::Del, att, &conf) {
                errors.push(in_plugin(e, plugin, "delete"));
            }
        }
        join_errors(errors)
    }

    /// GC: attachments of this network whose netns is gone are deleted (from
    /// their cached config); the rest are the valid attachments every plugin
    /// is told about (1.1.0 lists only).
    pub fn gc(&self, list: &NetworkList) -> Result<GcReport, CniError> {
        let mut report = GcReport::default();
        if list.disable_gc {
            return Ok(report);
        }
        let mut errors = Vec::new();
        for entry in self.cache.list().into_iter().filter(|e| e.network_name == list.name) {
            let att = entry.attachment();
            if !att.netns.is_empty() && !Path::new(&att.netns).exists() {
                let cached_list = entry.network().unwrap_or_else(|| list.clone());
                match self.del(&cached_list, &att) {
                    Ok(()) => {
                        report.stale_deleted.push(format!("{}/{}", att.container_id, att.ifname));
                        continue;
                    }
                    Err(e) => errors.push(CniError {
                        msg: format!(
                            "failed to delete stale attachment {} {}: {}",
                            att.container_id, att.ifname, e.msg
                        ),
                        ..e
                    }),
                }
            }
            report.valid.push(json!({ "containerID": att.container_id, "ifname": att.ifname }));
        }
        if version::at_least(&list.cni_version, "1.1.0") {
            let none = Attachment::default();
            for plugin in &list.plugins {
                let mut conf = plugin_config(list, plugin, None, &Map::new());
                conf["cni.dev/valid-attachments"] = Value::Array(report.valid.clone());
                conf["cni.dev/attachments"] = Value::Array(report.valid.clone());
                if let Err(e) = self.exec(NetworkList::plugin_type(plugin), Verb::Gc, &none, &conf) {
                    errors.push(in_plugin(e, plugin, "gc"));
                }
            }
        }
        join_errors(errors).map(|_| report)
    }

    /// STATUS on every plugin (1.1.0 lists only); the first failure is the answer.
    pub fn status(&self, list: &NetworkList) -> Result<(), CniError> {
        if !version::at_least(&list.cni_version, "1.1.0") {
            return Ok(());
        }
        let none = Attachment::default();
        for plugin in &list.plugins {
            let conf = plugin_config(list, plugin, None, &Map::new());
            self.exec(NetworkList::plugin_type(plugin), Verb::Status, &none, &conf)
                .map_err(|e| in_plugin(e, plugin, "status"))?;
        }
        Ok(())
    }
}

/// Prefixes a plugin's error with which plugin and which step failed.
fn in_plugin(e: CniError, plugin: &Value, step: &str) -> CniError {
    CniError { msg: format!("plugin {} failed ({step}): {}", NetworkList::describe(plugin), e.msg), ..e }
}

fn join_errors(errors: Vec<CniError>) -> Result<(), CniError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.into_iter().next().unwrap_or_else(|| CniError::internal(""))),
        _ => {
            let code = errors[0].code;
            let msg = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
            Err(CniError::new(code, msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn temp_dir(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("cnibox-rt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    #[test]
    fn loads_conflists_first_then_confs_first_match_wins() {
        let d = temp_dir("order");
        let w = |f: &str, s: &str| std::fs::write(d.0.join(f), s).unwrap();
        w("20-b.conflist", r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"second"}]}"#);
        w("10-a.conf", r#"{"cniVersion":"1.0.0","name":"net","type":"first"}"#);
        w("30-c.json", r#"{"cniVersion":"0.4.0","name":"other","type":"third"}"#);
        w("05-broken.conf", "{nope");
        w("99-ignored.txt", r#"{"cniVersion":"1.0.0","name":"x","type":"y"}"#);
        // libcni's LoadConfList: every .conflist before any .conf, whatever their names.
        let list = load_network(&d.0, "net").unwrap();
        assert_eq!(NetworkList::plugin_type(&list.plugins[0]), "second");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.source.as_deref(), Some(d.0.join("20-b.conflist").as_path()));
        let other = load_network(&d.0, "other").unwrap();
        assert_eq!((other.cni_version.as_str(), NetworkList::plugin_type(&other.plugins[0])), ("0.4.0", "third"));
        let e = load_network(&d.0, "x").unwrap_err();
        assert!(e.details.contains("05-broken.conf"), "{e:?}");
        assert_eq!(load_all(&d.0).len(), 4);
    }

    #[test]
    fn conf_becomes_a_one_plugin_list() {
        let list =
            NetworkList::from_bytes(br#"{"cniVersion":"0.3.1","name":"n","type":"bridge","bridge":"br0"}"#).unwrap();
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0]["bridge"], "br0");
        assert_eq!(list.name, "n");
        assert!(NetworkList::from_bytes(br#"{"name":"n"}"#).is_err());
        assert!(NetworkList::from_bytes(br#"{"name":"n","plugins":[]}"#).is_err());
        assert!(NetworkList::from_bytes(br#"{"name":"n","plugins":[{"x":1}]}"#).is_err());
        assert!(NetworkList::from_bytes(br#"{"type":"x"}"#).is_err());
        assert_eq!(NetworkList::from_bytes(br#"{"cniVersion":"9.9.9","name":"n","type":"x"}"#).unwrap_err().code, 1);
    }

    #[test]
    fn list_flags_and_versions() {
        let list = NetworkList::from_bytes(
            br#"{"cniVersion":"0.4.0","cniVersions":["1.0.0","1.1.0","9.0.0"],"name":"n",
                 "disableCheck":"true","disableGC":true,"plugins":[{"type":"a"},{"type":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(list.cni_version, "1.1.0");
        assert!(list.disable_check && list.disable_gc);
        assert!(NetworkList::from_bytes(br#"{"name":"n","disableCheck":3,"plugins":[{"type":"a"}]}"#).is_err());
        // The cached form parses back to the same list.
        let again = NetworkList::from_bytes(list.to_json().to_string().as_bytes()).unwrap();
        assert_eq!((again.cni_version, again.plugins, again.disable_gc), ("1.1.0".into(), list.plugins, true));
    }

    #[test]
    fn a_conflist_without_plugins_takes_them_from_its_directory() {
        let d = temp_dir("noplugins");
        let w = |f: &str, s: &str| std::fs::write(d.0.join(f), s).unwrap();
        w("10-net.conflist", r#"{"cniVersion":"1.1.0","name":"net"}"#);
        std::fs::create_dir_all(d.0.join("net")).unwrap();
        w("net/20-second.conf", r#"{"type":"second"}"#);
        w("net/10-first.conf", r#"{"type":"first"}"#);
        let list = load_network(&d.0, "net").unwrap();
        let types: Vec<&str> = list.plugins.iter().map(NetworkList::plugin_type).collect();
        assert_eq!(types, ["first", "second"]);
        // Neither inlined nor in files: an error that says where it looked.
        w("20-empty.conflist", r#"{"cniVersion":"1.1.0","name":"empty"}"#);
        let e = load_network(&d.0, "empty").unwrap_err();
        assert!(e.details.contains("no plugins"), "{e:?}");
        // Inlined only, and none inlined.
        w("30-inline.conflist", r#"{"cniVersion":"1.1.0","name":"inline","loadOnlyInlinedPlugins":true}"#);
        assert!(load_network(&d.0, "inline").is_err());
    }

    #[test]
    fn plugins_from_the_network_directory() {
        let d = temp_dir("plugdir");
        std::fs::write(d.0.join("a.conflist"), r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"one"}]}"#)
            .unwrap();
        std::fs::create_dir(d.0.join("net")).unwrap();
        std::fs::write(d.0.join("net/10-two.conf"), r#"{"type":"two"}"#).unwrap();
        let list = load_network(&d.0, "net").unwrap();
        let types: Vec<&str> = list.plugins.iter().map(NetworkList::plugin_type).collect();
        assert_eq!(types, ["one", "two"]);
        std::fs::write(
            d.0.join("a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"net","loadOnlyInlinedPlugins":true,"plugins":[{"type":"one"}]}"#,
        )
        .unwrap();
        assert_eq!(load_network(&d.0, "net").unwrap().plugins.len(), 1);
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let list = NetworkList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[
                {"type":"bridge"},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}},
                {"type":"tuning","capabilities":{"mac":true},"runtimeConfig":{"mac":"keep"}}]}"#,
        )
        .unwrap();
        let caps: Map<String, Value> = serde_json::from_str(
            r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"bandwidth":{"x":1}}"#,
        )
        .unwrap();
        let prev = json!({"cniVersion":"1.0.0","ips":[]});
        let bridge = plugin_config(&list, &list.plugins[0], None, &caps);
        assert!(bridge.get("runtimeConfig").is_none());
        assert!(bridge.get("prevResult").is_none());
        assert_eq!((bridge["name"].as_str(), bridge["cniVersion"].as_str()), (Some("n"), Some("1.0.0")));
        let portmap = plugin_config(&list, &list.plugins[1], Some(&prev), &caps);
        assert_eq!(portmap["runtimeConfig"], json!({"portMappings": caps["portMappings"]}));
        assert_eq!(portmap["prevResult"], prev);
        // Nothing to inject: the plugin's own runtimeConfig stays.
        let tuning = plugin_config(&list, &list.plugins[2], None, &caps);
        assert_eq!(tuning["runtimeConfig"], json!({"mac":"keep"}));
    }

    #[test]
    fn cache_layout_is_libcnis() {
        let d = temp_dir("cache");
        let cache = Cache::new(&d.0);
        let list = NetworkList::from_bytes(br#"{"cniVersion":"1.0.0","name":"mynet","type":"loopback"}"#).unwrap();
        let att = Attachment {
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: vec![("K".into(), "V".into())],
            capability_args: serde_json::from_str(r#"{"mac":"aa"}"#).unwrap(),
        };
        let result = json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]});
        cache.write(&list, &att, &result).unwrap();
        let path = d.0.join("results/mynet-c1-eth0");
        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["kind"], "cniCacheV1");
        assert_eq!(raw["containerId"], "c1");
        assert_eq!(raw["ifName"], "eth0");
        assert_eq!(raw["networkName"], "mynet");
        assert_eq!(raw["netns"], "/run/netns/x");
        assert_eq!(raw["cniArgs"], json!([["K", "V"]]));
        assert_eq!(raw["capabilityArgs"], json!({"mac":"aa"}));
        assert_eq!(raw["result"], result);
        let config = base64::decode(raw["config"].as_str().unwrap()).unwrap();
        let cached: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(cached["plugins"][0]["type"], "loopback");
        let entry = cache.read("mynet", &att).unwrap();
        assert_eq!(entry.network().unwrap().name, "mynet");
        assert_eq!(entry.attachment().args, att.args);
        assert_eq!(cache.list().len(), 1);
        cache.remove("mynet", &att);
        assert!(cache.list().is_empty());
    }

    #[test]
    fn cnitool_container_id_and_args() {
        let id = Attachment::cnitool_container_id("/run/netns/x");
        assert_eq!(id, "cnitool-55e2cecc95014b0f7fc4");
        assert_eq!(parse_cni_args("A=1;B=2").unwrap(), vec![("A".into(), "1".into()), ("B".into(), "2".into())]);
        assert!(parse_cni_args("A=").is_err());
        assert!(parse_cni_args("A=1=2").is_err());
        validate_network_name("my-net_1.0").unwrap();
        for bad in ["", "../x", "a/b", "-a", "a b"] {
            assert!(validate_network_name(bad).is_err(), "{bad:?}");
        }
    }
}
