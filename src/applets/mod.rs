//! The applet table: the single source of truth for dispatch, `--list`,
//! install.sh and the tests. Keep it sorted by name.

use crate::cni::Applet;

mod bridge;
mod container;
mod loopback;
mod masq;
mod ptp;

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
        name: "bridge",
        about: "Connects the container to a Linux bridge on the host through a veth pair",
        keys: &[
            ("bridge", "bridge name (default cni0)"),
            ("isGateway", "put the gateway address on the bridge and enable forwarding"),
            ("isDefaultGateway", "also route the container's default traffic via the bridge (implies isGateway)"),
            ("forceAddress", "replace a different address already on the bridge"),
            ("ipMasq", "masquerade traffic leaving the subnet (nftables)"),
            ("ipMasqBackend", "\"nftables\" or \"iptables\" (both written with nftables)"),
            ("mtu", "MTU of the bridge and the veth pair"),
            ("hairpinMode", "let frames go back out the port they came in"),
            ("promiscMode", "set the bridge promiscuous (not with hairpinMode)"),
            ("vlan", "VLAN id of the container's port (untagged, pvid)"),
            ("vlanTrunk", "tagged VLANs of the port: [{\"id\"}, {\"minID\", \"maxID\"}]"),
            ("preserveDefaultVlan", "keep the port in the default VLAN with vlan/vlanTrunk (default true)"),
            ("enabledad", "run IPv6 duplicate address detection on the container interface"),
            ("macspoofchk", "drop frames from the container whose source MAC is not its own"),
            ("disableContainerInterface", "leave the container interface down (no IPAM)"),
            ("portIsolation", "isolate the port from other isolated ports"),
            ("dns", "DNS settings for the result"),
            ("ipam", "IPAM plugin configuration ({} or absent: layer 2 only)"),
            ("runtimeConfig.mac / args.cni.mac / CNI_ARGS MAC", "MAC address of the container interface"),
        ],
        entry: Entry::Plugin(&bridge::Bridge),
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
        name: "ptp",
        about: "Connects the container to the host with a point-to-point veth pair",
        keys: &[
            ("ipMasq", "masquerade traffic leaving the subnet (nftables)"),
            ("ipMasqBackend", "\"nftables\" or \"iptables\" (both written with nftables)"),
            ("mtu", "MTU of the veth pair"),
            ("dns", "DNS settings for the result"),
            ("ipam", "IPAM plugin configuration (required)"),
        ],
        entry: Entry::Plugin(&ptp::Ptp),
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
