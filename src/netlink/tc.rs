//! Traffic control: the few qdiscs and filters the bandwidth applet needs
//! (tbf, ingress, a u32 match-all filter redirecting to another device) and
//! ifb devices, over rtnetlink. netlink-packet-route has no tbf type, so its
//! options are encoded here (struct tc_tbf_qopt from linux/pkt_sched.h).

use rtnetlink::packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::link::InfoKind;
use rtnetlink::packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption, TcActionOption, TcActionType,
    TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key,
    TcU32Selector, TcU32SelectorFlags,
};
use rtnetlink::{LinkMessageBuilder, LinkUnspec};

use super::msg::{self, RTM_DELQDISC, RTM_GETQDISC, RTM_GETTFILTER, RTM_NEWQDISC, RTM_NEWTFILTER};
use super::{Netlink, Result};

/// The handle `tc` writes as `1:`, used for the root tbf.
pub const TBF_HANDLE: u32 = 0x0001_0000;
/// The ingress qdisc's fixed handle, `ffff:`.
pub const INGRESS_HANDLE: u32 = 0xffff_0000;
/// TC_H_ROOT.
pub const ROOT_PARENT: u32 = 0xffff_ffff;
/// TC_H_INGRESS, the ingress qdisc's parent.
pub const INGRESS_PARENT: u32 = 0xffff_fff1;
/// ETH_P_ALL, the protocol of a filter matching every packet.
const ETH_P_ALL: u16 = 0x0003;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// TCA_* attributes of a tc message.
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
/// TCA_U32_ACT inside a u32 filter's options: the actions, one nested
/// attribute each, holding TCA_ACT_KIND and TCA_ACT_OPTIONS.
const TCA_U32_ACT: u16 = 7;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
/// TCA_MIRRED_PARMS: struct tc_mirred, i.e. struct tc_gen (20 bytes), then
/// eaction and ifindex.
const TCA_MIRRED_PARMS: u16 = 2;
const TCA_EGRESS_REDIR: u32 = 1;
/// sizeof(struct tcmsg).
const TCMSG_LEN: usize = 20;
/// TC_LINKLAYER_ETHERNET, what `tc` sets in a rate spec.
const LINKLAYER_ETHERNET: u8 = 1;

/// A token bucket filter's settings as the kernel keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tbf {
    /// Bytes per second.
    pub rate: u64,
    /// Bytes that may queue.
    pub limit: u32,
    /// Bucket size in scheduler ticks.
    pub buffer: u32,
    /// Bucket size in bytes, sent only when `buffer` cannot express it in 32
    /// bits (the kernel then derives the bucket from it, not from `buffer`).
    pub burst: Option<u32>,
}

/// One qdisc of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub kind: String,
    pub handle: u32,
    pub parent: u32,
    /// Set for tbf qdiscs.
    pub tbf: Option<Tbf>,
}

impl Tbf {
    /// struct tc_tbf_qopt: rate and peakrate tc_ratespecs (12 bytes each),
    /// then limit, buffer, mtu.
    fn encode_parms(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(36);
        // rate: cell_log, linklayer, overhead, cell_align, mpu, rate
        b.push(0);
        b.push(LINKLAYER_ETHERNET);
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&(self.rate.min(u32::MAX as u64) as u32).to_ne_bytes());
        // peakrate: unused
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&self.limit.to_ne_bytes());
        b.extend_from_slice(&self.buffer.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b
    }

    /// Reads the nested TCA_TBF_* attributes of a dump.
    fn decode(nested: &[u8]) -> Option<Tbf> {
        let mut tbf = None;
        let mut rate64 = None;
        for (kind, value) in msg::attrs(nested) {
            match kind {
                TCA_TBF_PARMS if value.len() >= 36 => {
                    let u32_at = |off: usize| u32::from_ne_bytes(value[off..off + 4].try_into().unwrap_or_default());
                    tbf = Some(Tbf { rate: u32_at(8) as u64, limit: u32_at(24), buffer: u32_at(28), burst: None });
                }
                TCA_TBF_RATE64 if value.len() >= 8 => {
                    rate64 = Some(u64::from_ne_bytes(value[..8].try_into().unwrap_or_default()));
                }
                _ => {}
            }
        }
        let mut tbf = tbf?;
        if let Some(r) = rate64 {
            tbf.rate = r;
        }
        Some(tbf)
    }
}

/// Reads an RTM_NEWQDISC payload (struct tcmsg, then attributes).
fn parse_qdisc(payload: &[u8]) -> Option<Qdisc> {
    let mut q =
        Qdisc { kind: String::new(), handle: msg::u32_at(payload, 8)?, parent: msg::u32_at(payload, 12)?, tbf: None };
    let mut options = None;
    for (kind, value) in msg::attrs_after(payload, TCMSG_LEN) {
        match kind {
            TCA_KIND => q.kind = msg::string(value),
            TCA_OPTIONS => options = Some(value),
            _ => {}
        }
    }
    if q.kind == "tbf" {
        q.tbf = options.and_then(Tbf::decode);
    }
    Some(q)
}

/// The devices the mirred actions of a u32 filter (an RTM_NEWTFILTER
/// payload) redirect to.
fn redirect_targets(payload: &[u8]) -> Vec<u32> {
    let mut targets = Vec::new();
    let mut kind = String::new();
    let mut options: &[u8] = &[];
    for (k, v) in msg::attrs_after(payload, TCMSG_LEN) {
        match k {
            TCA_KIND => kind = msg::string(v),
            TCA_OPTIONS => options = v,
            _ => {}
        }
    }
    if kind != "u32" {
        return targets;
    }
    for (_, action) in msg::find_attr(options, TCA_U32_ACT).map(msg::attrs).into_iter().flatten() {
        if msg::find_attr(action, TCA_ACT_KIND).map(msg::string).as_deref() != Some("mirred") {
            continue;
        }
        let Some(parms) = msg::find_attr(action, TCA_ACT_OPTIONS).and_then(|o| msg::find_attr(o, TCA_MIRRED_PARMS))
        else {
            continue;
        };
        if let (Some(TCA_EGRESS_REDIR), Some(ifindex)) = (msg::u32_at(parms, 20), msg::u32_at(parms, 24)) {
            targets.push(ifindex);
        }
    }
    targets
}

/// Scheduler ticks per microsecond, from /proc/net/psched as `tc` and the
/// reference compute it (15.625 on every current kernel).
pub fn ticks_per_usec() -> f64 {
    let fallback = 15.625;
    let Ok(text) = std::fs::read_to_string("/proc/net/psched") else { return fallback };
    let vals: Vec<u64> = text.split_whitespace().filter_map(|p| u64::from_str_radix(p, 16).ok()).collect();
    let [mut t2us, us2t, clock_res, ..] = vals[..] else { return fallback };
    if us2t == 0 {
        return fallback;
    }
    if clock_res == 1_000_000_000 {
        t2us = us2t;
    }
    t2us as f64 / us2t as f64 * (clock_res as f64 / 1_000_000.0)
}

impl Netlink {
    /// The qdiscs of device `index`.
    pub fn qdiscs(&self, index: u32) -> Result<Vec<Qdisc>> {
        let query = TcMessage::with_index(index as i32);
        let msgs = self.dump(RTM_GETQDISC, &query, &format!("listing qdiscs of link #{index}"))?;
        Ok(msgs.iter().filter(|m| msg::u32_at(m, 4) == Some(index)).filter_map(|m| parse_qdisc(m)).collect())
    }

    /// Makes a tbf with handle 1: the root qdisc of device `index`
    /// (`tc qdisc replace dev X root handle 1: tbf ...`).
    pub fn replace_root_tbf(&self, index: u32, tbf: &Tbf) -> Result<()> {
        let mut opts = vec![TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, tbf.encode_parms()))];
        if tbf.rate > u32::MAX as u64 {
            opts.push(TcOption::Other(DefaultNla::new(TCA_TBF_RATE64, tbf.rate.to_ne_bytes().to_vec())));
        }
        // Without TCA_TBF_BURST the kernel derives the bucket size in bytes
        // from buffer and rate, as it does for the reference.
        if let Some(burst) = tbf.burst {
            opts.push(TcOption::Other(DefaultNla::new(TCA_TBF_BURST, burst.to_ne_bytes().to_vec())));
        }
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.parent = TcHandle::from(ROOT_PARENT);
        msg.header.handle = TcHandle::from(TBF_HANDLE);
        msg.attributes.push(TcAttribute::Kind("tbf".into()));
        msg.attributes.push(TcAttribute::Options(opts));
        self.ack(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE, &msg, &format!("setting a tbf qdisc on link #{index}"))
    }

    /// Adds the ingress qdisc (`tc qdisc add dev X ingress`).
    pub fn add_ingress_qdisc(&self, index: u32) -> Result<()> {
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.parent = TcHandle::INGRESS;
        msg.header.handle = TcHandle::from(INGRESS_HANDLE);
        msg.attributes.push(TcAttribute::Kind("ingress".into()));
        self.ack(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, &msg, &format!("adding an ingress qdisc to link #{index}"))
    }

    /// Deletes the qdisc `handle` under `parent` of device `index`.
    pub fn del_qdisc(&self, index: u32, handle: u32, parent: u32) -> Result<()> {
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.handle = TcHandle::from(handle);
        msg.header.parent = TcHandle::from(parent);
        self.ack(RTM_DELQDISC, 0, &msg, &format!("deleting qdisc {handle:x} of link #{index}"))
    }

    /// Redirects every packet arriving on device `index` to the egress of
    /// device `target` (`tc filter add dev X parent ffff: protocol all prio 1
    /// u32 match u32 0 0 flowid 1:1 action mirred egress redirect dev T`).
    pub fn add_redirect_filter(&self, index: u32, target: u32) -> Result<()> {
        // The structs are non-exhaustive: fill defaults field by field.
        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.nkeys = 1;
        selector.keys = vec![TcU32Key::default()];
        let mut mirror = TcMirror::default();
        mirror.generic = TcActionGeneric::default();
        mirror.generic.action = TcActionType::Stolen;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = target;
        let mut action = TcAction::default();
        action.attributes = vec![
            TcActionAttribute::Kind(TcActionMirror::KIND.to_string()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(mirror))]),
        ];
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.parent = TcHandle::from(INGRESS_HANDLE);
        // tcm_info: priority in the upper half, protocol in network order below.
        msg.header.info = (1u32 << 16) | u32::from(ETH_P_ALL.to_be());
        msg.attributes.push(TcAttribute::Kind(TcFilterU32::KIND.to_string()));
        msg.attributes.push(TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::ClassId(TcHandle { major: 1, minor: 1 })),
            TcOption::U32(TcFilterU32Option::Selector(selector)),
            TcOption::U32(TcFilterU32Option::Action(vec![action])),
        ]));
        self.ack(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, &msg, &format!("adding a redirect filter to link #{index}"))
    }

    /// The devices the ingress filters of device `index` redirect to.
    pub fn ingress_redirect_targets(&self, index: u32) -> Result<Vec<u32>> {
        let mut query = TcMessage::with_index(index as i32);
        query.header.parent = TcHandle { major: 0xffff, minor: TcHandle::MIN_INGRESS };
        let msgs = self.dump(RTM_GETTFILTER, &query, &format!("listing the ingress filters of link #{index}"))?;
        Ok(msgs.iter().flat_map(|m| redirect_targets(m)).collect())
    }

    /// Creates an ifb device, up, with the given MTU.
    pub fn add_ifb(&self, name: &str, mtu: u32) -> Result<()> {
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Ifb)
            .name(name.to_string())
            .mtu(mtu)
            .up()
            .build();
        self.add_link_message(msg, &format!("creating ifb {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_parms_round_trip() {
        let tbf = Tbf { rate: 125_000, limit: 128_125, buffer: 1_000_000, burst: None };
        let parms = tbf.encode_parms();
        assert_eq!(parms.len(), 36);
        let mut nested = Vec::new();
        nested.extend_from_slice(&(40u16).to_ne_bytes());
        nested.extend_from_slice(&TCA_TBF_PARMS.to_ne_bytes());
        nested.extend_from_slice(&parms);
        assert_eq!(Tbf::decode(&nested), Some(tbf));
    }

    #[test]
    fn ticks() {
        let t = ticks_per_usec();
        assert!(t > 0.0 && t.is_finite());
    }
}
