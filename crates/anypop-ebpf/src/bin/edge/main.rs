//! `edge`: the XDP program of a POP.
//!
//! parse → VIP? → service → rules (bitmap pre-selection, first match) → rate limit → Maglev /
//! flow table → IPIP encapsulation → FIB next hop → XDP_TX / XDP_REDIRECT.
//!
//! This file is the packet's walk, top to bottom ([`run`], numbered as in docs/ARCHITECTURE.md,
//! "The edge program, step by step"); each stage lives in a module of its own: the maps
//! ([`maps`]), the service lookup ([`service`]), the rules ([`rules`], their source dimension in
//! [`sources`]), the rate limit ([`ratelimit`]), the backend choice ([`flows`]), the tunnel
//! ([`encap`]), the answer to a packet too big for it ([`icmp`]) and packet sampling
//! ([`capture`]). Which of them are BPF functions of their own and which are inlined is decided
//! function by function (see the verifier notes there): keep each `#[inline(...)]` as it is.
//!
//! Every packet ends with exactly one [`Reason`], counted per CPU in packets and bytes. No path
//! returns XDP_ABORTED: a failure is a verdict like any other.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod atomic;
mod capture;
mod encap;
mod flows;
mod icmp;
mod maps;
mod ratelimit;
mod rules;
mod service;
mod sources;
mod verdict;

use anypop_common::{layout::*, verdict::Reason};
use anypop_ebpf::{
    counters::add,
    parse::{Packet, parse_packet},
    zero_words,
};
use aya_ebpf::{macros::xdp, programs::XdpContext};

use maps::*;
use verdict::{Verdict, drop, pass};

anypop_ebpf::license!();

#[xdp]
pub fn edge(ctx: XdpContext) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let mut who = capture::Who::new();
    let v = run(&ctx, &mut who);
    if v.too_big_for != 0 {
        return icmp::edge_too_big(
            ctx.ctx,
            v.too_big_for,
            who.service,
            who.rule,
            who.generation,
        );
    }
    add(&COUNTERS, v.reason as u32, frame_len);
    capture::maybe_sample(&ctx, v.action, v.reason as u32, &who);
    v.action
}

#[inline(always)]
fn run(ctx: &XdpContext, who: &mut capture::Who) -> Verdict {
    // ---- 1: the live config generation ----
    let (generation, version) = match CONTROL.get(0) {
        Some(c) => (c.active_gen & 1, c.version),
        None => (0, 0),
    };
    who.generation = generation;
    let settings = match SETTINGS.get(generation) {
        Some(s) => s,
        None => return pass(Reason::PassNotVip),
    };
    // ---- 2: parse ----
    // The packet summary lives in zeroed 8-byte words (see `zero_words`); all-zero bytes are a
    // valid `Packet` (numbers 0, flags false).
    let mut pkt_words = PacketWords { w: [0; 8] };
    zero_words(&mut pkt_words.w);
    let pkt = unsafe { &mut *(&mut pkt_words as *mut PacketWords as *mut Packet) };
    if let Err(r) = parse_packet(ctx, pkt) {
        return if r == Reason::PassNotIp {
            pass(r)
        } else {
            drop(r)
        };
    }

    // ---- 3-5: the service, or why there is none ----
    let svc = match service::lookup(generation, settings, pkt) {
        Ok(svc) => svc,
        Err(v) => return v,
    };
    let max_services = settings.max_services;
    let gs = generation * max_services + svc;
    who.service = svc;

    // ---- 6: IPv4: what the rules decide for the source's class, computed in user space ----
    // Two array reads. A flood from a listed prefix ends here; a player that no rule can match
    // skips the rule walk below.
    let mut decision = DECIDE_WALK;
    if pkt.family == FAMILY_V4 {
        decision = rules::source_decision(generation, gs, pkt);
        if decide_is_deny(decision) {
            add(&SVC_HITS, gs, pkt.ip_len as u64);
            who.rule = decide_rule_index(decision);
            add(
                &RULE_HITS,
                generation * MAX_RULES_TOTAL + who.rule,
                pkt.ip_len as u64,
            );
            return drop(Reason::DropRule);
        }
    }

    let info = match SVC_INFO.get(gs) {
        Some(i) => i,
        None => return drop(Reason::DropNoService),
    };
    add(&SVC_HITS, gs, pkt.ip_len as u64);

    // ---- 6: the rules: first match decides ----
    let mut profile = info.profile;
    let slot = match decision {
        DECIDE_WALK if info.rule_count > 0 => rules::first_matching_rule(generation, gs, info, pkt),
        DECIDE_WALK | DECIDE_NO_RULE => NONE,
        d => decide_slot(d),
    };
    if slot != NONE {
        if let Some(rule) = RULES.get(gs * RULES_PER_SERVICE + (slot & 63)) {
            who.rule = rule.rule_index & 1023;
            add(
                &RULE_HITS,
                generation * MAX_RULES_TOTAL + (rule.rule_index & 1023),
                pkt.ip_len as u64,
            );
            match rule.action {
                ACTION_DENY => return drop(Reason::DropRule),
                ACTION_ALLOW => profile = NONE,
                _ => profile = rule.profile,
            }
        }
    }

    // ---- 7: the per-source rate limit ----
    if profile != NONE {
        let r = ratelimit::rate_limit(generation, info.stable_id, profile, pkt, settings);
        if let Some(r) = Reason::from_u32(r) {
            return drop(r);
        }
    }

    // ---- 8: IPv6 passes ----
    if pkt.family != FAMILY_V4 {
        // IPv6 services are filtered and limited today; forwarding them comes later.
        return pass(Reason::PassV6Service);
    }
    // ---- 9: the backend ----
    if info.has_backends == 0 {
        return drop(Reason::DropNoBackend);
    }
    let (backend_addr, backend_index) =
        match flows::pick_backend(generation, version, svc, gs, info.stable_id, pkt) {
            Some(b) => b,
            None => return drop(Reason::DropNoBackend),
        };
    // ---- 10: the tunnel ----
    let v = encap::encapsulate(ctx, pkt, settings, backend_addr, backend_index);
    if v.reason == Reason::FwdIpip || v.reason == Reason::FwdIpipKernel {
        if backend_index != NONE {
            add(
                &BE_HITS,
                generation * MAX_BACKENDS + (backend_index & (MAX_BACKENDS - 1)),
                pkt.ip_len as u64,
            );
        }
    }
    v
}

/// Backing store for [`Packet`].
#[repr(C, align(8))]
struct PacketWords {
    w: [u64; 8],
}

const _: () = assert!(core::mem::size_of::<Packet>() <= core::mem::size_of::<PacketWords>());
