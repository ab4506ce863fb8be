//! The applet table: the single source of truth for dispatch, `--list`,
//! `cnibox install` and the tests. Keep it sorted by name.

use crate::cni::Applet;

mod bandwidth;
mod bridge;
mod cnitool;
pub(crate) mod dhcp;
mod dummy;
mod firewall;
mod flannel;
mod host_device;
mod host_local;
mod ipvlan;
mod loopback;
mod macvlan;
mod portmap;
mod ptp;
mod sbr;
mod shared;
mod static_ipam;
mod tap;
mod tuning;
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
            ("vlan", "VLAN id of the container's port (untagged, pvid; with vlanTrunk, its native VLAN)"),
            ("vlanTrunk", "tagged VLANs of the port: [{\"id\"}, {\"minID\", \"maxID\"}] (alone: VLAN 1 untagged)"),
            ("preserveDefaultVlan", "keep the port in the default VLAN with vlan/vlanTrunk (default false)"),
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
        name: "cnitool",
        about: "Runs a network's plugin chain by hand (add, check, del, gc, status), like the reference cnitool",
        keys: &[],
        entry: Entry::Tool(cnitool::main),
        args_main: None,
    },
    AppletInfo {
        name: "dhcp",
        about: "IPAM: addresses from a DHCP server, through the lease daemon (`dhcp daemon`), whose leases \
                survive its restarts; STATUS is code 50 while the daemon is down or cannot write its state directory",
        keys: &[
            ("ipam.daemonSocketPath", "the daemon's unix socket (default /run/cni/dhcp.sock)"),
            (
                "ipam.daemonStateDir",
                "the daemon's -statedir (default /var/lib/cni/dhcp): DEL releases from it while the daemon is down",
            ),
            ("ipam.provide", "options sent to the server: [{option, value | fromArg (a CNI_ARGS key)}]"),
            ("ipam.request", "options asked of the server: [{option, skipDefault}]"),
            ("ipam.priority", "metric of the DHCPv4 routes and of the RA's IPv6 default route"),
            (
                "ipam.families",
                "[\"ipv4\"] (default), [\"ipv6\"] or both: DHCPv6 gives a /128 (IA_NA), RAs the prefix and route",
            ),
        ],
        entry: Entry::Plugin(&dhcp::Dhcp),
        args_main: Some(dhcp::args_main),
    },
    AppletInfo {
        name: "dummy",
        about: "Gives the container a dummy interface carrying the IPAM addresses",
        keys: &[("ipam", "IPAM plugin configuration (required)")],
        entry: Entry::Plugin(&dummy::Dummy),
        args_main: None,
    },
    AppletInfo {
        name: "firewall",
        about: "Forward-path rules and ingress policy for the container with nftables (chained plugin)",
        keys: &[
            ("ingressPolicy", "open (default), same-bridge (other isolating bridges cannot reach it) or isolated (nor its own bridge)"),
            ("iptablesAdminChainName", "operators' chain jumped to first, never flushed (default CNI-ADMIN)"),
            ("backend", "unset: nftables, plus firewalld when it runs; \"iptables\": nftables only; \"firewalld\": nftables plus firewalld, which must run (else code 2, STATUS 50)"),
            ("firewalldZone", "firewalld zone of the container's addresses (default trusted)"),
        ],
        entry: Entry::Plugin(&firewall::Firewall),
        args_main: None,
    },
    AppletInfo {
        name: "flannel",
        about: "Meta plugin: turns flanneld's subnet lease into a delegate config (bridge + host-local by default)",
        keys: &[
            ("subnetFile", "flanneld's lease file (default /run/flannel/subnet.env)"),
            ("dataDir", "where delegate configs are saved per container (default /var/lib/cni/flannel)"),
            ("delegate", "the delegate's config; flannel fills name, type, ipMasq, mtu, isGateway, ipam"),
            ("ipam", "base of the delegate's IPAM section (type host-local; ranges and routes are added)"),
            ("runtimeConfig", "passed through to the delegate"),
        ],
        entry: Entry::Plugin(&flannel::Flannel),
        args_main: None,
    },
    AppletInfo {
        name: "host-device",
        about: "Moves an existing host interface into the container",
        keys: &[
            ("device", "name of the host interface"),
            ("hwaddr", "MAC address of the host interface"),
            ("kernelpath", "its /sys/devices/... path"),
            ("pciBusID", "its PCI address"),
            ("runtimeConfig.deviceID", "a PCI address, or a device on the auxiliary bus (/sys/bus/auxiliary/devices)"),
            ("ipam", "IPAM plugin configuration"),
        ],
        entry: Entry::Plugin(&host_device::HostDevice),
        args_main: None,
    },
    AppletInfo {
        name: "host-local",
        about: "IPAM: allocates addresses from configured ranges, reservations kept in files on the host",
        keys: host_local::KEYS,
        entry: Entry::Plugin(&host_local::HostLocal),
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
        name: "macvlan",
        about: "Gives the container a macvlan link on a host interface",
        keys: &[
            ("master", "parent interface (default: the interface of the default route)"),
            ("mode", "bridge (default), private, vepa or passthru"),
            ("mtu", "MTU, at most the master's (default: the master's)"),
            ("mac", "MAC address (also CNI_ARGS MAC, runtimeConfig.mac)"),
            ("linkInContainer", "the master lives in the container netns"),
            ("bcqueuelen", "broadcast/multicast queue length"),
            ("ipam", "IPAM plugin configuration"),
        ],
        entry: Entry::Plugin(&macvlan::Macvlan),
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
    AppletInfo {
        name: "sbr",
        about: "Source-based routing for the interface of a chained result",
        keys: &[
            ("table", "table for the rules (default: a free table from 100 on per IP, routes moved into it)"),
            ("gateways", "one IPv4 and/or one IPv6 gateway used instead of the result's"),
            ("addSourceHints", "keep subnet routes in the main table with the IP as source hint"),
        ],
        entry: Entry::Plugin(&sbr::Sbr),
        args_main: None,
    },
    AppletInfo {
        name: "static",
        about: "IPAM: hands out the addresses given in the configuration or by the runtime",
        keys: &[
            ("ipam.addresses", "list of {address (CIDR), gateway}"),
            ("ipam.routes", "list of {dst, gw} returned in the result"),
            ("ipam.dns", "{nameservers, domain, search, options} returned in the result"),
            ("CNI_ARGS IP, GATEWAY", "comma-separated CIDRs appended / gateways set on matching addresses"),
            ("args.cni.ips", "CIDRs replacing the configured addresses"),
            ("runtimeConfig.ips", "capability \"ips\": CIDRs replacing all of the above"),
        ],
        entry: Entry::Plugin(&static_ipam::Static),
        args_main: None,
    },
    AppletInfo {
        name: "tap",
        about: "Creates a tap device in the container",
        keys: &[
            ("mac", "MAC address (also CNI_ARGS MAC, runtimeConfig.mac)"),
            ("mtu", "MTU"),
            ("multiQueue", "create a multi-queue tap"),
            ("owner", "uid allowed to attach to the tap"),
            ("group", "gid allowed to attach to the tap"),
            ("bridge", "bridge in the container netns to make the tap a port of"),
            ("selinuxContext", "SELinux context the tap is created under (needs SELinux)"),
            ("ipam", "IPAM plugin configuration"),
        ],
        entry: Entry::Plugin(&tap::Tap),
        args_main: Some(tap::args_main),
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

/// Lets the plugin invoker run delegates that are cnibox applets
/// in-process, and validate their configs. cni/ sits below this module and
/// cannot name it, so the table is handed down: call this once before any
/// applet runs (main does; so do the fuzz targets).
pub fn register_with_invoker() {
    crate::cni::invoke::register_applets(plugin);
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
