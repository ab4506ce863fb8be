//! The applet table: the single source of truth for dispatch, `--list`,
//! install.sh and the tests. Keep it sorted by name.

use crate::cni::Applet;

mod bandwidth;
mod loopback;
mod tuning;

/// How an applet is entered.
pub enum Entry {
    /// A CNI plugin: driven by CNI_* and stdin through the skel.
    Plugin(&'static dyn Applet),
    /// A command-line tool, given its arguments.
    Tool(fn(&[String]) -> i32),
}

pub struct AppletInfo {
    pub name: &'static str,
    pub about: &'static str,
    /// The configuration keys the applet reads, with a line on each.
    pub keys: &'static [(&'static str, &'static str)],
    pub entry: Entry,
    /// For plugins that also have a command line (e.g. `dhcp daemon`).
    pub args_main: Option<fn(&[String]) -> i32>,
}

pub static APPLETS: &[AppletInfo] = &[
    AppletInfo {
        name: "bandwidth",
        about: "Chained: limits the container's traffic with tbf qdiscs on its host veth (and an ifb for egress)",
        keys: &[
            ("ingressRate", "traffic toward the container, bits per second (needs ingressBurst)"),
            ("ingressBurst", "bucket size for ingressRate, bits (under 4 GB)"),
            ("egressRate", "traffic from the container, bits per second (needs egressBurst)"),
            ("egressBurst", "bucket size for egressRate, bits (under 4 GB)"),
            ("runtimeConfig.bandwidth", "the same four keys from the runtime; used only when the config sets none"),
        ],
        entry: Entry::Plugin(&bandwidth::Bandwidth),
        args_main: None,
    },
    AppletInfo {
        name: "loopback",
        about: "Brings up the loopback interface of the container",
        keys: &[],
        entry: Entry::Plugin(&loopback::Loopback),
        args_main: None,
    },
    AppletInfo {
        name: "tuning",
        about: "Chained: sets sysctls and link settings of the container interface, restored on DEL",
        keys: &[
            ("sysctl", "map of net.* sysctls set in the container; IFNAME in a key is the interface name"),
            ("mac", "MAC address (also CNI_ARGS MAC, runtimeConfig.mac, args.cni.mac, in rising precedence)"),
            ("mtu", "MTU"),
            ("promisc", "true turns promiscuous mode on"),
            ("allmulti", "all-multicast mode on or off"),
            ("txQLen", "transmit queue length"),
            ("dataDir", "where original values are saved (default /run/cni/tuning)"),
            ("args.cni", "sysctl, mac, mtu, promisc, allmulti, txQLen overriding the config"),
            (
                "(allowlist)",
                "/etc/cni/tuning/allowlist.conf, if present: every sysctl key must match one of its regexes \
                 (env CNIBOX_TUNING_ALLOWLIST names another file, for tests and unusual installs)",
            ),
        ],
        entry: Entry::Plugin(&tuning::Tuning),
        args_main: None,
    },
];

pub fn find(name: &str) -> Option<&'static AppletInfo> {
    APPLETS.binary_search_by(|a| a.name.cmp(name)).ok().map(|i| &APPLETS[i])
}

/// The plugin applet called `name`, for in-process delegation.
pub fn plugin(name: &str) -> Option<&'static dyn Applet> {
    match find(name)?.entry {
        Entry::Plugin(p) => Some(p),
        Entry::Tool(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_is_sorted_and_unique() {
        let names: Vec<&str> = super::APPLETS.iter().map(|a| a.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }
}
