//! Link events, and deleting a link without waiting for the kernel to
//! free it.
//!
//! Why: the kernel answers RTM_DELLINK only once it is done with the device.
//! After unregistering it under RTNL (which needs RCU grace periods), it
//! waits outside RTNL, in netdev_run_todo, for rcu_barrier() and for the
//! device's last references to drop: 15-20 ms here, most of a bridge DEL's
//! time. For everyone else the link is gone much earlier: unlisted from its
//! netns, out of its bridge, its addresses and routes flushed. The kernel
//! announces exactly that moment with an RTM_DELLINK notification to link
//! event listeners, 1-3 ms after the request. What remains after it is
//! freeing memory, which the kernel does in any case, as it does when it
//! deletes a whole netns in the background.
//!
//! How: a detached child (detached.rs) sends the request and reports
//! the kernel's answer through a pipe. This process returns at whichever
//! comes first: the notification that the watched link (the last one the
//! deletion takes along, e.g. a veth's host end) is gone, or the answer.
//! A notification that cannot arrive (another peer than expected) or got
//! lost (the listening socket overflowed on a busy node) only means waiting
//! for the answer, as a plain request does. If the child cannot be
//! started or dies before answering, the request is made here.
//!
//! The request deletes one link by name, or every link of an interface
//! group at once (veth.rs batches concurrent DELs that way). The bridge's
//! wait for a new port to forward uses the same subscriptions.

use std::os::fd::{AsRawFd, OwnedFd};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::libc;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::LinkUnspec;

use super::link::{IFINFOMSG_LEN, IFLA_IFNAME};
use super::msg::{attrs_after, messages, NLMSG_ERROR, RTM_DELLINK};
use super::{Error, Netlink, Result};
use crate::util::detached;

/// RTMGRP_LINK: the multicast group of link events.
const RTMGRP_LINK: u32 = 1;
/// Room for a burst of link events from a busy node (the kernel charges
/// only what is queued). Past it events are lost, which callers survive.
const EVENTS_RCVBUF: usize = 4 << 20;

/// A subscription to the link events (RTM_NEWLINK, RTM_DELLINK) of the
/// netns it was made in: waiting for the kernel to announce a change
/// instead of asking again and again (every RTM_GETLINK takes RTNL).
/// Subscribe before making the change, or its event may be missed.
pub struct LinkEvents {
    sock: Socket,
}

/// How a wait for an event ended.
#[derive(Debug, PartialEq)]
pub enum Wait {
    Seen,
    TimedOut,
    /// Events were dropped (the queue overflowed): the one waited for may
    /// be among them, so this subscription can no longer tell.
    Lost,
}

/// An event: its message type and payload (struct ifinfomsg, attributes).
pub type Event<'a> = (u16, &'a [u8]);

/// Which events a subscription receives. The kernel applies the choice (a
/// socket filter) before queueing: on a busy node every link change is
/// announced to every subscriber, and a woken process for each would slow
/// the others down.
#[derive(Debug, Clone, Copy)]
pub enum Only {
    /// RTM_DELLINK events.
    Deletions,
    /// Events about the link with this index.
    Link(u32),
}

impl Only {
    /// A classic BPF program over the message (struct nlmsghdr, then struct
    /// ifinfomsg): load one field, accept the message if it equals the
    /// wanted value, else drop it. BPF loads read big-endian, the fields
    /// are in host order: the constant is the wanted bytes read that way.
    fn filter(self) -> [libc::sock_filter; 4] {
        let (load, offset, value) = match self {
            // nlmsg_type: 16 bits at offset 4.
            Only::Deletions => (libc::BPF_H, 4, u32::from(u16::from_be_bytes(RTM_DELLINK.to_ne_bytes()))),
            // ifi_index: 32 bits at offset 16 + 4.
            Only::Link(index) => (libc::BPF_W, 20, u32::from_be_bytes(index.to_ne_bytes())),
        };
        let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: code as u16, jt, jf, k };
        [
            op(libc::BPF_LD | load | libc::BPF_ABS, 0, 0, offset),
            op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, value),
            op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
            op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
        ]
    }
}

impl LinkEvents {
    /// Subscribes in the calling thread's netns to the events `only` picks.
    pub fn subscribe(only: Only) -> Result<LinkEvents> {
        let io = |e: std::io::Error| Error::new(e.raw_os_error().unwrap_or(0), format!("watching link events: {e}"));
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(io)?;
        // Before joining the group: nothing unfiltered is ever queued.
        let program = only.filter();
        let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr().cast_mut() };
        // SAFETY: the kernel copies the program during the call.
        let attached = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if attached < 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        sock.bind(&SocketAddr::new(0, RTMGRP_LINK)).map_err(io)?;
        // SO_RCVBUFFORCE (root) may exceed rmem_max; else take what is allowed.
        if nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &EVENTS_RCVBUF).is_err() {
            let _ = sock.set_rx_buf_sz(EVENTS_RCVBUF);
        }
        sock.set_non_blocking(true).map_err(io)?;
        Ok(LinkEvents { sock })
    }

    /// Waits up to `timeout` for an event that `wanted` picks.
    pub fn wait_for(&self, timeout: std::time::Duration, wanted: impl Fn(Event) -> bool) -> Wait {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.drain(&wanted) {
                Some(true) => return Wait::Seen,
                None => return Wait::Lost,
                Some(false) => {}
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Wait::TimedOut;
            }
            let mut pfd = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: poll on one descriptor we own.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        }
    }

    /// Reads the queued events. Some(true): one that `wanted` picks was
    /// among them; Some(false): not yet; None: events were lost.
    fn drain(&self, wanted: impl Fn(Event) -> bool) -> Option<bool> {
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            match self.sock.recv(&mut buf, 0) {
                Ok(_) => {
                    if messages(&buf).any(|m| wanted((m.kind, m.payload))) {
                        return Some(true);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // ENOBUFS: the queue overflowed and events were dropped.
                Err(_) => return None,
            }
        }
    }
}

/// The link index an event is about.
pub fn event_index((_, payload): Event) -> Option<u32> {
    super::msg::u32_at(payload, 4)
}

/// Which link's deletion ends the wait.
#[derive(Debug, Clone, Copy)]
pub enum Last<'a> {
    Named(&'a str),
    Index(u32),
}

impl Last<'_> {
    /// An RTM_DELLINK of the link itself: family AF_UNSPEC (a bridge also
    /// reports a port leaving, with family AF_BRIDGE, before the device goes).
    fn deleted_by(self, event: Event) -> bool {
        let (kind, payload) = event;
        kind == RTM_DELLINK
            && payload.first() == Some(&0)
            && match self {
                Last::Index(index) => event_index(event) == Some(index),
                Last::Named(name) => attrs_after(payload, IFINFOMSG_LEN).any(|(kind, value)| {
                    kind == IFLA_IFNAME && value.split(|&b| b == 0).next() == Some(name.as_bytes())
                }),
            }
    }
}

impl Netlink {
    /// Deletes the link called `name` in this socket's netns; Ok(false) when
    /// there was none. Returns once `events` (subscribed in the netns of
    /// `last`, the last link the deletion takes along) announce `last` gone,
    /// or when the kernel answers, whichever is first (see the module
    /// comment). Without a subscription (it could not be made) this is a
    /// plain request that waits for the answer.
    pub fn del_link_watched(self, name: &str, events: Option<LinkEvents>, last: Last) -> Result<bool> {
        let request = LinkUnspec::new_with_name(name).build();
        self.del_watched(&request, &format!("deleting link {name}"), events, last)
    }

    /// Deletes every link of interface group `group` in this socket's netns,
    /// in one batch (the kernel then shares its grace periods between them);
    /// Ok(false) when there was none. Returns as `del_link_watched` does.
    pub fn del_group_watched(self, group: u32, events: Option<LinkEvents>, last: Last) -> Result<bool> {
        let request = LinkUnspec::new_with_index(0).link_group(group).build();
        self.del_watched(&request, &format!("deleting the links of group {group:#x}"), events, last)
    }

    fn del_watched(self, request: &LinkMessage, what: &str, events: Option<LinkEvents>, last: Last) -> Result<bool> {
        let (request, seq) = self.frame(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, request);
        let answered = |errno: i32| match errno {
            0 => Ok(true),
            e if Error::new(e, "").is_not_found() => Ok(false),
            e => Err(Error::from_errno(e, what)),
        };
        let Some(events) = events else { return answered(self.ack_errno(&request, seq)) };
        let Ok((answer_read, answer_write)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
            return answered(self.ack_errno(&request, seq));
        };
        let (sock_fd, write_fd) = (self.sock.as_raw_fd(), answer_write.as_raw_fd());
        let started = detached::spawn(&[sock_fd, write_fd], || {
            let errno = self.ack_errno(&request, seq);
            // SAFETY: a plain write of 4 bytes from the stack.
            unsafe { libc::write(write_fd, errno.to_ne_bytes().as_ptr().cast(), 4) };
        });
        drop(answer_write);
        if !started {
            return answered(self.ack_errno(&request, seq));
        }
        match wait_for_answer_or_event(&answer_read, &events, last) {
            Outcome::Gone => Ok(true),
            Outcome::Answer(errno) => answered(errno),
            // The child died before it answered: the request, once more, here.
            Outcome::NoAnswer => answered(self.ack_errno(&request, seq)),
        }
    }

    /// Sends a framed request and reads its ACK: 0 or the errno. Uses only
    /// raw syscalls and the stack, so that a forked child may call it.
    fn ack_errno(&self, request: &[u8], seq: u32) -> i32 {
        let fd = self.sock.as_raw_fd();
        // SAFETY: plain send/recv on our socket with buffers we own.
        unsafe {
            if libc::send(fd, request.as_ptr().cast(), request.len(), 0) < 0 {
                return std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
            }
            let mut buf = [0u8; 8192];
            loop {
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n < 0 {
                    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
                    if errno == libc::EINTR {
                        continue;
                    }
                    return errno;
                }
                let got = &buf[..n as usize];
                // NLMSG_ERROR carries -errno, 0 for an ACK.
                if let Some(m) = messages(got).find(|m| m.seq == seq && m.kind == NLMSG_ERROR) {
                    let code = m.payload.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    return -code;
                }
            }
        }
    }
}

enum Outcome {
    /// The watched link's deletion was announced.
    Gone,
    /// The kernel's answer to the request: 0 or an errno.
    Answer(i32),
    /// The pipe closed without an answer.
    NoAnswer,
}

fn wait_for_answer_or_event(answer: &OwnedFd, events: &LinkEvents, last: Last) -> Outcome {
    let mut watching = true;
    loop {
        let mut fds = [
            libc::pollfd { fd: answer.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: events.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        let count = if watching { 2 } else { 1 };
        // SAFETY: poll on an array we own.
        if unsafe { libc::poll(fds.as_mut_ptr(), count, -1) } < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // Cannot wait for both: the answer alone (read blocks).
            fds[0].revents = libc::POLLIN;
        }
        if fds[0].revents != 0 {
            let mut errno = [0u8; 4];
            let n = unsafe { libc::read(answer.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
            return if n == 4 { Outcome::Answer(i32::from_ne_bytes(errno)) } else { Outcome::NoAnswer };
        }
        if watching && fds[1].revents != 0 {
            match events.drain(|event| last.deleted_by(event)) {
                Some(true) => return Outcome::Gone,
                Some(false) => {}
                None => watching = false,
            }
        }
    }
}
