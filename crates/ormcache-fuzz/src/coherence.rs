//! The invalidation channel: anyone who can PUBLISH on `{prefix}:__oc:inv` can send
//! any bytes. Messages go through the subscriber's own parsing, peer and sequence
//! bookkeeping and tenant checks, and are applied to a real L1.

use std::cell::RefCell;
use std::time::Duration;

use ormcache::__fuzz::{self as internals, FuzzMessage, FuzzOp, Received, Receiver};

use crate::doc::string;
use crate::rng::mutate;
use crate::{Check, Rng, Target, ensure, show};

/// The invalidation-message parser.
pub const TARGET: Target = Target {
    name: "coherence",
    about: "invalidation messages and acknowledgements: messages round trip, every valid message is applied, hostile payloads and sequence numbers never panic",
    case,
};

const OWN_ID: u64 = 42;

thread_local! {
    // One receiver for many cases (its state accumulates, as a long-lived
    // subscriber's does), replaced now and then.
    static RECEIVER: RefCell<Option<(Receiver, u32)>> = const { RefCell::new(None) };
}

fn tenant(rng: &mut Rng) -> Option<String> {
    match rng.below(6) {
        0 | 1 => None,
        2 => Some("acme".into()),
        3 => Some(format!("t{}", rng.below(5))),
        // Invalid ids: the receiver must flush, not apply.
        4 => Some(string(rng, 4)),
        _ => Some(["", "a:b", "__oc", "x".repeat(65).as_str(), "é", "a*"][rng.below(6)].to_owned()),
    }
}

fn message(rng: &mut Rng, last_seq: &mut u64) -> FuzzMessage {
    let sender = match rng.below(8) {
        0 => OWN_ID,
        1 => rng.next_u64(),
        _ => 1 + rng.below(4) as u64,
    };
    *last_seq = match rng.below(8) {
        0 => rng.edgy_u64(),
        1 => last_seq.saturating_sub(rng.below(5) as u64),
        2 => last_seq.saturating_add(rng.below(3000) as u64),
        _ => last_seq.saturating_add(1),
    };
    let op = match rng.below(6) {
        0 => FuzzOp::Keys((0..rng.len(6)).map(|_| string(rng, 6)).collect()),
        1 => FuzzOp::Pattern(string(rng, 6)),
        2 => FuzzOp::Clear,
        3 => FuzzOp::Tag(string(rng, 4)),
        _ => FuzzOp::Heartbeat,
    };
    FuzzMessage {
        sender,
        seq: *last_seq,
        op,
        tenant: tenant(rng),
        bye: rng.one_in(10),
        joined: rng.one_in(10),
    }
}

/// JSON that is well-formed but not a message, or a message with odd fields.
fn odd_json(rng: &mut Rng) -> Vec<u8> {
    let pieces = [
        r#"{"i":1,"s":1,"o":"c"}"#.to_owned(),
        r#"{"i":-1,"s":1,"o":"c"}"#.to_owned(),
        r#"{"i":1.5,"s":1e400,"o":"h"}"#.to_owned(),
        r#"{"i":18446744073709551615,"s":18446744073709551615,"o":{"k":["a"]}}"#.to_owned(),
        r#"{"i":1,"s":2,"o":{"p":"*"},"t":"acme","b":true,"j":true}"#.to_owned(),
        r#"{"i":1,"s":2,"o":{"t":""},"t":null}"#.to_owned(),
        r#"{"i":1,"s":2,"o":{"k":[]},"i":3}"#.to_owned(),
        r#"{"i":1,"s":2,"o":{"x":1}}"#.to_owned(),
        r#"{"i":1,"s":2,"o":"c","extra":[[[[[]]]]]}"#.to_owned(),
        format!(
            r#"{{"i":1,"s":2,"o":{{"k":["{}"]}}}}"#,
            "a".repeat(rng.below(5000))
        ),
        "[".repeat(rng.below(300)),
        format!("{}{}", "{\"a\":".repeat(rng.below(300)), "1"),
        r#"{"i":2,"a":7}"#.to_owned(),
        String::new(),
    ];
    pieces[rng.below(pieces.len())].clone().into_bytes()
}

fn case(rng: &mut Rng) -> Check {
    RECEIVER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let fresh = !matches!(slot.as_ref(), Some((_, uses)) if *uses < 2_000);
        if fresh {
            let r = Receiver::new(OWN_ID).map_err(|e| format!("receiver: {e}"))?;
            *slot = Some((r, 0));
        }
        let Some((receiver, uses)) = slot.as_mut() else {
            return Err("no receiver".into());
        };
        *uses += 1;
        run(rng, receiver)
    })
}

fn run(rng: &mut Rng, receiver: &mut Receiver) -> Check {
    let mut last_seq = rng.below(10) as u64;
    for _ in 0..1 + rng.below(8) {
        match rng.below(10) {
            0..=4 => {
                let m = message(rng, &mut last_seq);
                let bytes = internals::encode_message(m.clone());
                let back = internals::decode_message(&bytes);
                ensure(back.as_ref() == Some(&m), || {
                    format!("message {m:?} came back as {back:?} from {}", show(&bytes))
                })?;
                let got = receiver.on_message(&bytes);
                let want_own = m.sender == OWN_ID;
                ensure(
                    (got == Received::Own) == want_own && got != Received::Unreadable,
                    || format!("valid message {m:?} handled as {got:?}"),
                )?;
                if let Received::Applied { bad_tenant, .. } = got {
                    let invalid = m
                        .tenant
                        .as_deref()
                        .is_some_and(|t| ormcache::tenant::TenantId::new(t).is_err());
                    ensure(bad_tenant == invalid, || {
                        format!("tenant {:?}: bad_tenant {bad_tenant}", m.tenant)
                    })?;
                }
                // The same message mutated.
                let mut mutated = bytes;
                mutate(rng, &mut mutated);
                let _ = receiver.on_message(&mutated);
            }
            5 => {
                let _ = receiver.on_message(&odd_json(rng));
            }
            6 => {
                let (i, a) = (rng.edgy_u64(), rng.edgy_u64());
                let bytes = internals::encode_ack(i, a);
                ensure(internals::decode_ack(&bytes) == Some((i, a)), || {
                    format!("ack ({i}, {a}) did not round trip")
                })?;
                ensure(receiver.on_ack(&bytes), || "valid ack ignored".into())?;
                let mut mutated = bytes;
                mutate(rng, &mut mutated);
                let _ = receiver.on_ack(&mutated);
            }
            7 => {
                let junk: Vec<u8> = (0..rng.len(80)).map(|_| rng.byte()).collect();
                let _ = receiver.on_message(&junk);
                let _ = receiver.on_ack(&junk);
            }
            _ => {
                let d = match rng.below(4) {
                    0 => Duration::MAX,
                    1 => Duration::from_secs(31),
                    _ => Duration::from_millis(rng.below(1000) as u64),
                };
                receiver.advance(d);
            }
        }
    }
    Ok(())
}
