//! The applet table: the single source of truth for dispatch, `--list`,
//! install.sh and the tests. Keep it sorted by name.

use crate::cni::Applet;

mod firewall;
mod loopback;
mod portmap;

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
        name: "firewall",
        about: "Forward-path rules and ingress policy for the container with nftables (chained plugin)",
        keys: &[
            ("ingressPolicy", "open (default), same-bridge (other isolating bridges cannot reach it) or isolated (nor its own bridge)"),
            ("iptablesAdminChainName", "operators' chain jumped to first, never flushed (default CNI-ADMIN)"),
            ("backend", "\"iptables\" or unset: served with nftables; \"firewalld\" is refused (code 2)"),
            ("firewalldZone", "accepted and ignored (firewalld only)"),
        ],
        entry: Entry::Plugin(&firewall::Firewall),
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
        name: "portmap",
        about: "Forwards host ports to the container with nftables (chained plugin)",
        keys: &[
            (
                "runtimeConfig.portMappings",
                "[{hostPort, containerPort, protocol tcp|udp|sctp, hostIP}] (capability portMappings)",
            ),
            ("snat", "masquerade hairpin and localhost connections so replies return (default true)"),
            ("masqAll", "masquerade every forwarded connection, not only hairpin/localhost ones"),
            ("conditionsV4", "extra matches for IPv4 mappings, iptables or nft syntax (common matches)"),
            ("conditionsV6", "extra matches for IPv6 mappings, iptables or nft syntax (common matches)"),
            ("markMasqBit", "accepted (0-31) for compatibility; nftables needs no mark"),
            ("externalSetMarkChain", "accepted for compatibility; cnibox masquerades itself"),
            ("backend", "\"nftables\" or \"iptables\": both served with nftables"),
        ],
        entry: Entry::Plugin(&portmap::Portmap),
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
