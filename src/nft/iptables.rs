//! Running iptables, for the rules cnibox must keep where iptables is: the
//! firewall's way through a FORWARD that drops, and the reference plugins'
//! per-container state on a node that switched. Both flavours: iptables-nft
//! (`ip`/`ip6` tables in nf_tables, written with iptables' own expressions)
//! and iptables-legacy (x_tables, invisible to nft).
//!
//! Tables are read with `iptables-save -t <table>` (one exec, parsed here)
//! and changed with `iptables-restore -w --noflush` (one exec and one kernel
//! commit, however many rules). Before exec'ing anything, `present` and
//! `holds_any` ask the kernel cheaply whether the table holds the chains a
//! caller needs: nfnetlink for iptables-nft; for legacy
//! /proc/thread-self/net/ip*_tables_names, then the table's chain names
//! (xtables.rs).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use nftables::types::NfFamily;

use super::backend::Backend;
use super::error::{Error, ErrorKind, Result};
use super::xtables;

/// Where iptables keeps its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// iptables-nft: tables of family ip/ip6 in nf_tables.
    Nft,
    /// iptables-legacy: x_tables.
    Legacy,
}

/// One of the four iptables: {iptables, ip6tables} × {nft, legacy}.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iptables {
    pub flavor: Flavor,
    pub v6: bool,
}

impl std::fmt::Display for Iptables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.binary(""))
    }
}

impl Iptables {
    pub const ALL: [Iptables; 4] = [
        Iptables { flavor: Flavor::Nft, v6: false },
        Iptables { flavor: Flavor::Nft, v6: true },
        Iptables { flavor: Flavor::Legacy, v6: false },
        Iptables { flavor: Flavor::Legacy, v6: true },
    ];

    /// `iptables-nft`, `ip6tables-legacy-save`, ... (`tool` is "", "-save"
    /// or "-restore").
    fn binary(&self, tool: &str) -> String {
        let ip = if self.v6 { "ip6" } else { "ip" };
        let flavor = match self.flavor {
            Flavor::Nft => "nft",
            Flavor::Legacy => "legacy",
        };
        format!("{ip}tables-{flavor}{tool}")
    }

    /// Whether this iptables' tools are installed (on PATH).
    pub fn installed(&self) -> bool {
        let restore = self.binary("-restore");
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(&restore).exists()))
    }

    /// The nftables family iptables-nft keeps this iptables' tables in.
    pub fn nft_family(&self) -> NfFamily {
        if self.v6 {
            NfFamily::IP6
        } else {
            NfFamily::IP
        }
    }

    /// Whether `table` exists and holds `chain`, without exec'ing anything.
    pub fn present(&self, nft: &mut dyn Backend, table: &str, chain: &str) -> bool {
        self.holds_any(nft, table, &[chain])
    }

    /// Whether `table` exists and holds one of `chains`, without exec'ing
    /// anything: a chain lookup each for iptables-nft (a failed lookup
    /// counts as absent), one read of the table's chain names for legacy
    /// (names that cannot be read count as present: the caller's listing
    /// decides).
    ///
    /// The lookups go through the caller's backend, on the socket its other
    /// requests use: a socket of its own would be one more close, and a
    /// netfilter socket's close after a deletion waits for a grace period.
    pub fn holds_any<S: AsRef<str>>(&self, nft: &mut dyn Backend, table: &str, chains: &[S]) -> bool {
        match self.flavor {
            Flavor::Nft => chains.iter().any(|chain| match nft.has_chain(self.nft_family(), table, chain.as_ref()) {
                Ok(found) => found,
                Err(e) => {
                    log::debug!("{self}: cannot ask for {table} {}: {e}", chain.as_ref());
                    false
                }
            }),
            Flavor::Legacy => {
                self.chain_names(nft, table).is_none_or(|names| chains.iter().any(|c| names.contains(c.as_ref())))
            }
        }
    }

    /// The names of `table`'s chains, without exec'ing anything (empty when
    /// the table is missing); None when they cannot be read (then only a
    /// listing tells).
    pub fn chain_names(&self, nft: &mut dyn Backend, table: &str) -> Option<BTreeSet<String>> {
        let names = match self.flavor {
            Flavor::Nft => {
                nft.chain_names(self.nft_family(), table).map(|n| n.into_iter().collect()).map_err(|e| e.to_string())
            }
            Flavor::Legacy => xtables::chains(self.v6, table).map(Option::unwrap_or_default).map_err(|e| e.to_string()),
        };
        names.map_err(|e| log::debug!("{self}: cannot read the chains of {table}: {e}")).ok()
    }

    /// `table` as iptables-save prints it.
    pub fn save(&self, table: &str) -> Result<Saved> {
        let out = self.run("-save", &["-t", table], None)?;
        Ok(Saved::parse(&out))
    }

    /// Applies `script` as one iptables-restore transaction (nothing when
    /// it is empty): all of it or none.
    pub fn restore(&self, script: &Script) -> Result<()> {
        if script.is_empty() {
            return Ok(());
        }
        let text = script.render();
        log::debug!("{self}-restore: {text}");
        self.run("-restore", &["-w", "--noflush"], Some(text.as_bytes())).map(|_| ())
    }

    /// Applies what `build` makes of `first` (a listing of `table`); when
    /// that fails (a concurrent call changed the table meanwhile), lists
    /// again and retries once. One commit each time, none when nothing is to
    /// change.
    pub fn apply_fresh(&self, table: &str, first: Saved, build: impl Fn(&Saved) -> Script) -> Result<()> {
        match self.restore(&build(&first)) {
            Ok(()) => Ok(()),
            Err(e) => {
                log::debug!("{self}: {e}; listing again");
                self.restore(&build(&self.save(table)?)).map_err(|_| e)
            }
        }
    }

    fn run(&self, tool: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
        let binary = self.binary(tool);
        // The tests count these lines (as they count nft's).
        log::debug!("{binary} {}", args.join(" "));
        let mut child = Command::new(&binary)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                let kind =
                    if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::Unsupported } else { ErrorKind::Exec };
                Error::new(kind, format!("failed to run {binary} (is the iptables package installed?)"), e.to_string())
            })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input).map_err(|e| Error::exec(format!("failed to write to {binary}"), e))?;
        }
        let out = child.wait_with_output().map_err(|e| Error::exec(format!("failed to wait for {binary}"), e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            return Err(Error::new(kind_of(&stderr), format!("{binary} {} failed", args.join(" ")), stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The kind of a failure iptables reported: the one place that reads
/// iptables' messages. (iptables-legacy-restore says only "line N failed":
/// callers list again and retry rather than rely on the kind.)
fn kind_of(stderr: &str) -> ErrorKind {
    if stderr.contains("Chain already exists") {
        ErrorKind::Exists
    } else if stderr.contains("does a matching rule exist") || stderr.contains("No chain/target/match by that name") {
        ErrorKind::Missing
    } else if stderr.contains("is incompatible, use 'nft' tool") || stderr.contains("do you need to insmod") {
        // A table written by nft itself, or a kernel without this table.
        ErrorKind::Unsupported
    } else {
        ErrorKind::Exec
    }
}

/// One rule as iptables-save prints it: `-A <chain> <spec>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// The rule's words after the chain, unquoted.
    pub spec: Vec<String>,
}

impl SavedRule {
    /// The value following `option` (e.g. `-j`, `--comment`).
    pub fn value_of(&self, option: &str) -> Option<&str> {
        let at = self.spec.iter().position(|w| w == option)?;
        self.spec.get(at + 1).map(String::as_str)
    }

    /// The chain this rule jumps or goes to, or its verdict (`ACCEPT`, ...).
    pub fn target(&self) -> Option<&str> {
        self.value_of("-j").or_else(|| self.value_of("-g"))
    }

    pub fn comment(&self) -> Option<&str> {
        self.value_of("--comment")
    }

    /// Whether it matches exactly the conntrack state INVALID
    /// (`--ctstate INVALID` or `--state INVALID`, not negated).
    pub fn matches_invalid_only(&self) -> bool {
        self.spec.windows(2).enumerate().any(|(at, w)| {
            matches!(w[0].as_str(), "--ctstate" | "--state")
                && w[1] == "INVALID"
                && (at == 0 || self.spec[at - 1] != "!")
        })
    }
}

/// One table as iptables-save printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    /// (chain, policy): the built-in chains' policy, None for user chains.
    pub chains: Vec<(String, Option<String>)>,
    pub rules: Vec<SavedRule>,
}

impl Saved {
    pub fn parse(text: &str) -> Saved {
        let mut saved = Saved::default();
        for line in text.lines() {
            if let Some(decl) = line.strip_prefix(':') {
                let mut words = decl.split_whitespace();
                let Some(name) = words.next() else { continue };
                let policy = words.next().filter(|p| *p != "-").map(str::to_string);
                saved.chains.push((name.to_string(), policy));
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let mut words = split_words(rule);
                if words.is_empty() {
                    continue;
                }
                let chain = words.remove(0);
                saved.rules.push(SavedRule { chain, spec: words });
            }
        }
        saved
    }

    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|(c, _)| c == name)
    }

    pub fn policy(&self, chain: &str) -> Option<&str> {
        self.chains.iter().find(|(c, _)| c == chain).and_then(|(_, p)| p.as_deref())
    }

    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    /// Whether `chain` holds a rule with exactly `spec`.
    pub fn has_rule(&self, chain: &str, spec: &[String]) -> bool {
        self.rules_of(chain).any(|r| r.spec == spec)
    }

    /// Whether a packet traversing `chain` may be dropped there: a DROP
    /// policy, or a DROP or REJECT rule in it or in a chain it jumps to (as
    /// ufw and firewall scripts write them), not looking into `skip`. A rule
    /// matching only conntrack-INVALID packets (kube-proxy's) drops no
    /// container's traffic.
    pub fn may_drop(&self, chain: &str, skip: &str) -> bool {
        if self.policy(chain) == Some("DROP") {
            return true;
        }
        let mut seen = vec![chain.to_string()];
        let mut todo = vec![chain.to_string()];
        while let Some(c) = todo.pop() {
            for target in self.rules_of(&c).filter(|r| !r.matches_invalid_only()).filter_map(SavedRule::target) {
                match target {
                    "DROP" | "REJECT" => return true,
                    t if t == skip || seen.iter().any(|s| s == t) || !self.has_chain(t) => {}
                    t => {
                        seen.push(t.to_string());
                        todo.push(t.to_string());
                    }
                }
            }
        }
        false
    }
}

/// A line of iptables-save split into words as iptables-restore splits it:
/// at spaces, except inside double quotes, where a backslash escapes.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut in_word) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// A word as iptables-restore reads it back: quoted when it holds spaces,
/// quotes or backslashes (or is empty).
fn quote_word(word: &str) -> String {
    if !word.is_empty() && !word.chars().any(|c| c.is_whitespace() || c == '"' || c == '\\') {
        return word.to_string();
    }
    let escaped: String =
        word.chars().flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] }).collect();
    format!("\"{escaped}\"")
}

/// The commands of one iptables-restore transaction on one table.
///
/// Chains are created with `-N`, never declared with `:name`: with
/// `--noflush` a declaration flushes an existing chain.
#[derive(Debug, Clone)]
pub struct Script {
    table: String,
    lines: Vec<String>,
}

impl Script {
    pub fn new(table: &str) -> Script {
        Script { table: table.to_string(), lines: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// How many commands it holds.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    fn push(&mut self, command: &str, chain: &str, spec: &[String]) {
        let mut line = format!("{command} {}", quote_word(chain));
        for word in spec {
            line.push(' ');
            line.push_str(&quote_word(word));
        }
        self.lines.push(line);
    }

    pub fn new_chain(&mut self, chain: &str) {
        self.push("-N", chain, &[]);
    }

    /// Inserts `spec` as the first rule of `chain`.
    pub fn insert_first(&mut self, chain: &str, spec: &[String]) {
        self.push("-I", chain, &[vec!["1".to_string()], spec.to_vec()].concat());
    }

    pub fn append(&mut self, chain: &str, spec: &[String]) {
        self.push("-A", chain, spec);
    }

    /// Deletes the first rule of `chain` with exactly `spec`.
    pub fn delete(&mut self, chain: &str, spec: &[String]) {
        self.push("-D", chain, spec);
    }

    pub fn flush_chain(&mut self, chain: &str) {
        self.push("-F", chain, &[]);
    }

    pub fn delete_chain(&mut self, chain: &str) {
        self.push("-X", chain, &[]);
    }

    /// Appends `other`'s commands (of the same table).
    pub fn extend(&mut self, other: Script) {
        debug_assert_eq!(self.table, other.table);
        self.lines.extend(other.lines);
    }

    fn render(&self) -> String {
        format!("*{}\n{}\nCOMMIT\n", self.table, self.lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:CNI-FORWARD - [0:0]
:ufw-reject-forward - [0:0]
-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
-A FORWARD -j ufw-reject-forward
-A CNI-FORWARD -s 10.0.0.5/32 -m comment --comment "name: \"n\" id: \"c\"" -j ACCEPT
-A ufw-reject-forward -j REJECT --reject-with icmp-port-unreachable
COMMIT
"#;

    #[test]
    fn parses_chains_and_rules() {
        let saved = Saved::parse(SAVED);
        assert_eq!(saved.policy("FORWARD"), Some("DROP"));
        assert!(saved.has_chain("CNI-FORWARD") && saved.policy("CNI-FORWARD").is_none());
        assert_eq!(saved.rules.len(), 4);
        let r = &saved.rules[2];
        assert_eq!(r.chain, "CNI-FORWARD");
        assert_eq!(r.comment(), Some(r#"name: "n" id: "c""#));
        assert_eq!(r.target(), Some("ACCEPT"));
        assert!(saved.has_rule("FORWARD", &crate::nft::reference::forward_jump()));
    }

    #[test]
    fn finds_drops_through_jumps() {
        let mut saved = Saved::parse(SAVED);
        assert!(saved.may_drop("FORWARD", "CNI-FORWARD"));
        saved.chains[1].1 = Some("ACCEPT".into());
        assert!(saved.may_drop("FORWARD", "CNI-FORWARD"), "ufw's REJECT, one jump away");
        saved.rules.retain(|r| r.chain != "ufw-reject-forward");
        assert!(!saved.may_drop("FORWARD", "CNI-FORWARD"));
        // A loop of jumps ends.
        saved.rules.push(SavedRule { chain: "ufw-reject-forward".into(), spec: vec!["-j".into(), "FORWARD".into()] });
        assert!(!saved.may_drop("FORWARD", "CNI-FORWARD"));
    }

    #[test]
    fn a_drop_of_invalid_packets_only_drops_no_container_traffic() {
        let kube = |rule: &str| {
            Saved::parse(&format!(
                "*filter\n:FORWARD ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n\
                 -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
                 -A KUBE-FORWARD {rule}\nCOMMIT\n"
            ))
        };
        assert!(!kube("-m conntrack --ctstate INVALID -j DROP").may_drop("FORWARD", "CNI-FORWARD"));
        assert!(!kube("-m state --state INVALID -j DROP").may_drop("FORWARD", "CNI-FORWARD"));
        assert!(kube("-m conntrack ! --ctstate INVALID -j DROP").may_drop("FORWARD", "CNI-FORWARD"));
        assert!(kube("-m conntrack --ctstate INVALID,NEW -j DROP").may_drop("FORWARD", "CNI-FORWARD"));
        assert!(kube("-j DROP").may_drop("FORWARD", "CNI-FORWARD"));
    }

    #[test]
    fn words_round_trip_through_quoting() {
        let line = r#"POSTROUTING -s 10.0.0.5/32 -m comment --comment "name: \"a b\" id: \"c\\d\"" -j CNI-x"#;
        let words = split_words(line);
        assert_eq!(words[6], r#"name: "a b" id: "c\d""#);
        let requoted: Vec<String> = words.iter().map(|w| quote_word(w)).collect();
        assert_eq!(split_words(&requoted.join(" ")), words);
    }

    #[test]
    fn scripts_render_as_restore_input() {
        let mut s = Script::new("filter");
        assert!(s.is_empty());
        s.new_chain("CNI-FORWARD");
        s.insert_first("FORWARD", &crate::nft::reference::forward_jump());
        s.delete("CNI-FORWARD", &["-s".into(), "10.0.0.5/32".into(), "-j".into(), "ACCEPT".into()]);
        assert_eq!(
            s.render(),
            "*filter\n-N CNI-FORWARD\n-I FORWARD 1 -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n\
             -D CNI-FORWARD -s 10.0.0.5/32 -j ACCEPT\nCOMMIT\n"
        );
    }

    #[test]
    fn kinds_from_iptables_messages() {
        assert_eq!(kind_of("iptables-nft-restore: line 2 failed: Chain already exists."), ErrorKind::Exists);
        assert_eq!(kind_of("line 2 failed: Bad rule (does a matching rule exist in that chain?)."), ErrorKind::Missing);
        assert_eq!(kind_of("table `filter' is incompatible, use 'nft' tool."), ErrorKind::Unsupported);
        assert_eq!(kind_of("iptables-restore: line 2 failed"), ErrorKind::Exec);
    }
}
