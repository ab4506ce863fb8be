//! The applet table: the single source of truth for dispatch, `--list`,
//! install.sh and the tests. Keep it sorted by name.

use crate::cni::Applet;

mod dummy;
mod ipvlan;
mod loopback;
mod stacked;
mod vlan;
mod vrf;

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
        name: "dummy",
        about: "Gives the container a dummy interface carrying the IPAM addresses",
        keys: &[("ipam", "IPAM plugin configuration (required)")],
        entry: Entry::Plugin(&dummy::Dummy),
        args_main: None,
    },
    AppletInfo {
        name: "ipvlan",
        about: "Gives the container an ipvlan interface on a host (master) device",
        keys: &[
            ("master", "parent device (default: the default-route link, or the prevResult's single interface)"),
            ("mode", "l2 (default), l3 or l3s"),
            ("mtu", "MTU of the interface, at most the master's (default: the master's)"),
            ("linkInContainer", "the master lives in the container netns"),
            ("ipam", "IPAM plugin configuration (optional when chained after a plugin that assigned IPs)"),
            ("dns", "DNS settings returned in the result"),
        ],
        entry: Entry::Plugin(&ipvlan::Ipvlan),
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
        name: "vlan",
        about: "Gives the container an 802.1Q VLAN interface on a host (master) device",
        keys: &[
            ("master", "parent device (required)"),
            ("vlanId", "VLAN ID, 0 to 4094"),
            ("mtu", "MTU of the interface, at most the master's (default: the master's)"),
            ("linkInContainer", "the master lives in the container netns"),
            ("ipam", "IPAM plugin configuration (required)"),
            ("dns", "DNS settings returned in the result"),
        ],
        entry: Entry::Plugin(&vlan::Vlan),
        args_main: None,
    },
    AppletInfo {
        name: "vrf",
        about: "Puts the container interface into a VRF (chained plugin)",
        keys: &[
            ("vrfname", "name of the VRF device in the container (created when missing; shared by interfaces)"),
            ("table", "routing table of the VRF (default: the lowest free one)"),
        ],
        entry: Entry::Plugin(&vrf::Vrf),
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
