//! How pipelines reach a Redis Cluster: the split by slot, the grouping by
//! primary and the slot map it is grouped by (see [`split`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Arg, Cmd, Pipeline, RedisFuture, RedisResult, ServerErrorKind, Value};

use crate::distributed::cluster::{SlotMap, slot_of};

/// The least time between two `CLUSTER SLOTS` refreshes of a [`SlotView`].
const REFRESH_GAP: Duration = Duration::from_millis(100);
/// A map older than this is read again in the background (and used
/// meanwhile), so that a resharding is seen even without an error.
const MAP_MAX_AGE: Duration = Duration::from_secs(1);
/// How long a background `CLUSTER SLOTS` may take before the next refresh may
/// start (redis-rs can hold a request while it recovers its own slot map).
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// A cluster connection, with the slot map that its split pipelines are
/// grouped by (one map shared by every connection of a cache).
#[derive(Clone)]
pub(in crate::distributed) struct ClusterConn {
    conn: ClusterConnection,
    view: Arc<SlotView>,
}

impl ClusterConn {
    pub(in crate::distributed) fn new(conn: ClusterConnection, view: Arc<SlotView>) -> Self {
        Self { conn, view }
    }

    /// Runs `cmd` where `routing` says (redis-rs follows redirections).
    pub(in crate::distributed) async fn route_command(
        &self,
        cmd: Cmd,
        routing: RoutingInfo,
    ) -> RedisResult<Value> {
        self.conn.clone().route_command(cmd, routing).await
    }

    /// Runs `pipe` on the primary that serves `slot` (redis-rs follows
    /// redirections: see [`NodePipeline`]).
    async fn route_pipeline(&self, pipe: NodePipeline, slot: u16) -> RedisResult<Vec<Value>> {
        let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
        let count = pipe.pipe.len() - pipe.offset;
        self.conn
            .clone()
            .route_pipeline(pipe.pipe, pipe.offset, count, route)
            .await
    }

    /// Loads the slot map now (at connect time), within `within`; a failure
    /// leaves it to be loaded in the background later.
    pub(in crate::distributed) async fn load_slot_map(&self, within: Duration) {
        let Some(refreshing) = self.view.begin_refresh(true) else {
            return;
        };
        let map = tokio::time::timeout(within, fetch_slot_map(self.conn.clone()))
            .await
            .ok()
            .flatten();
        refreshing.0.store(map);
    }
}

impl ConnectionLike for ClusterConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if matches!(plan(cmd), Plan::Split(_)) {
            Box::pin(async move {
                let mut replies = split(self, &[cmd]).await?;
                Ok(replies.pop().unwrap_or(Value::Nil))
            })
        } else {
            self.conn.req_packed_command(cmd)
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if pipeline.is_transaction() || offset != 0 || count != pipeline.len() {
            // redis-rs sends it whole, in order, to the slot's node (a
            // transaction is applied whole or not at all wherever it lands).
            self.conn.req_packed_commands(pipeline, offset, count)
        } else if let Some(slot) = one_slot(pipeline) {
            Box::pin(async move {
                let pipe = NodePipeline::of(pipeline.len(), pipeline.cmd_iter().cloned());
                self.route_pipeline(pipe, slot).await
            })
        } else {
            Box::pin(async move {
                let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
                split(self, &cmds).await
            })
        }
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// The slot map of a cluster as last read, refreshed in the background when a
/// grouped request failed (one refresh at a time, at most one per
/// [`REFRESH_GAP`]); until then pipelines are split per slot.
#[derive(Debug, Default)]
pub(in crate::distributed) struct SlotView {
    state: Mutex<ViewState>,
}

#[derive(Debug, Default)]
struct ViewState {
    map: Option<Arc<SlotMap>>,
    /// When `map` was read.
    read_at: Option<Instant>,
    refreshing: bool,
    last_refresh: Option<Instant>,
}

/// A refresh in progress; dropped (finished, failed or cancelled), it lets
/// the next one start.
struct Refreshing(Arc<SlotView>);

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.0.state().refreshing = false;
    }
}

impl SlotView {
    fn state(&self) -> MutexGuard<'_, ViewState> {
        // A poisoned lock still holds a valid map (or none).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the refresh, unless one runs or (`at_once` aside) the last one
    /// started less than [`REFRESH_GAP`] ago.
    fn begin_refresh(self: &Arc<Self>, at_once: bool) -> Option<Refreshing> {
        let mut state = self.state();
        let recent = state
            .last_refresh
            .is_some_and(|at| at.elapsed() < REFRESH_GAP);
        if state.refreshing || (recent && !at_once) {
            return None;
        }
        state.refreshing = true;
        state.last_refresh = Some(Instant::now());
        Some(Refreshing(Arc::clone(self)))
    }

    fn store(&self, map: Option<SlotMap>) {
        let mut state = self.state();
        state.read_at = map.is_some().then(Instant::now);
        state.map = map.map(Arc::new);
    }

    /// Forgets the map (it may be stale): pipelines are split per slot until
    /// a refresh, which this starts.
    fn invalidate(self: &Arc<Self>, conn: &ClusterConnection) {
        self.state().map = None;
        self.refresh_in_background(conn);
    }

    /// The current map; without one, or with one older than
    /// [`MAP_MAX_AGE`], starts a refresh in the background.
    fn current(self: &Arc<Self>, conn: &ClusterConnection) -> Option<Arc<SlotMap>> {
        let (map, old) = {
            let state = self.state();
            let old = state.read_at.is_none_or(|at| at.elapsed() > MAP_MAX_AGE);
            (state.map.clone(), old)
        };
        if old {
            self.refresh_in_background(conn);
        }
        map
    }

    fn refresh_in_background(self: &Arc<Self>, conn: &ClusterConnection) {
        // Outside a Tokio runtime there is no background: pipelines stay
        // split per slot.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(refreshing) = self.begin_refresh(false) else {
            return;
        };
        let conn = conn.clone();
        runtime.spawn(async move {
            let map = tokio::time::timeout(FETCH_TIMEOUT, fetch_slot_map(conn))
                .await
                .ok()
                .flatten();
            refreshing.0.store(map);
        });
    }
}

async fn fetch_slot_map(mut conn: ClusterConnection) -> Option<SlotMap> {
    let reply = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
        )
        .await
        .ok()?;
    SlotMap::from_reply(&reply).ok()
}

/// How a command reaches the cluster. Knows the commands ormcache sends.
#[derive(Debug, PartialEq)]
pub(super) enum Plan {
    /// Every key in one slot.
    Slot(u16),
    /// A multi-key command whose keys span slots: sent as one command per slot
    /// and recombined (never as a fan-out that could skip a node redis-rs has
    /// no connection to).
    Split(Combine),
    /// No key (or an invalid cross-slot script): sent alone, after the rest.
    Later,
}

/// How the parts of a split command are recombined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Combine {
    /// `MGET`: the values, in key order.
    Values,
    /// `UNLINK`, `DEL`, `EXISTS`: the sum.
    Count,
}

#[allow(clippy::needless_pass_by_value)] // `args_iter` yields them by value
fn bytes(arg: Arg<&[u8]>) -> &[u8] {
    match arg {
        Arg::Simple(bytes) => bytes,
        _ => b"0",
    }
}

pub(super) fn plan(cmd: &Cmd) -> Plan {
    let mut args = cmd.args_iter().map(bytes);
    let Some(name) = args.next() else {
        return Plan::Later;
    };
    let is = |names: &[&str]| {
        names
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
    };
    if is(&["PUBLISH", "PING", "INFO", "DBSIZE", "SCAN", "CLUSTER"]) {
        return Plan::Later;
    }
    let (keys, combine) = if is(&["EVAL", "EVALSHA"]) {
        let _script = args.next();
        let n = args
            .next()
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        (args.take(n), None)
    } else if is(&["MGET"]) {
        (args.take(usize::MAX), Some(Combine::Values))
    } else if is(&["UNLINK", "DEL", "EXISTS"]) {
        (args.take(usize::MAX), Some(Combine::Count))
    } else {
        (args.take(1), None)
    };
    let mut slots = keys.map(slot_of);
    let Some(first) = slots.next() else {
        return Plan::Later;
    };
    match (slots.all(|s| s == first), combine) {
        (true, _) => Plan::Slot(first),
        (false, Some(c)) => Plan::Split(c),
        (false, None) => Plan::Later,
    }
}

/// Whether every command of `pipeline` has its keys in one and the same slot.
/// (redis-rs would route a keyless `PUBLISH` by its channel name, as if it
/// were a key: such pipelines are split.)
pub(super) fn one_slot(pipeline: &Pipeline) -> Option<u16> {
    let mut seen = None;
    let all = pipeline.cmd_iter().all(|cmd| match plan(cmd) {
        Plan::Later | Plan::Split(_) => false,
        Plan::Slot(slot) => *seen.get_or_insert(slot) == slot,
    });
    if all { seen } else { None }
}

/// Commands for one primary, sent as one pipeline.
///
/// redis-rs follows a redirection of any command of a pipeline by sending the
/// whole pipeline again: after `MOVED`, to the slot's new owner; after `ASK`
/// (the slot is migrating and the command's key has moved), to the importing
/// node, preceded by `ASKING`, which lets the next command there use the slot.
/// The commands that ran on the old owner must not run there again: a write
/// would make a second copy of its key (the holder registry that the old owner
/// still has), on which the migration then fails with `BUSYKEY`, and a read
/// would answer from the half-moved slot. So a pipeline of several commands
/// starts with a `PING`, which takes the `ASKING`: the importing node sends
/// the commands after it back (`MOVED`) until the migration is over, and when
/// redis-rs' retries run out the caller gets the redirection as its error (a
/// pipeline whose keys are on two nodes cannot run anywhere, as Redis answers
/// a multi-key command with `TRYAGAIN`). A pipeline of one command goes as it
/// is: that command is the one redirected, and belongs on the importing node.
struct NodePipeline {
    pipe: Pipeline,
    /// The replies to skip: the `PING`'s.
    offset: usize,
}

impl NodePipeline {
    fn of(n: usize, cmds: impl Iterator<Item = Cmd>) -> Self {
        let offset = usize::from(n > 1);
        let mut pipe = Pipeline::with_capacity(n + offset);
        if offset == 1 {
            pipe.add_command(redis::cmd("PING"));
        }
        for cmd in cmds {
            pipe.add_command(cmd);
        }
        Self { pipe, offset }
    }
}

/// One command as sent: a command of the pipeline, or (`keys`) the part of a
/// split one that carries these keys.
struct Piece<'a> {
    cmd: usize,
    slot: u16,
    keys: Option<Vec<&'a [u8]>>,
}

/// Pieces sent as one pipeline: those of one primary (by the slot map) or,
/// without a map, of one slot.
struct Group<'a> {
    by_node: bool,
    pieces: Vec<Piece<'a>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum GroupKey {
    Node(u16),
    Slot(u16),
}

/// Where a command's reply comes from.
enum Reply {
    /// This piece (group, position).
    Whole(usize, usize),
    /// Parts (group, position, indices of the keys they carry) of `keys` keys.
    Split(Combine, Vec<(usize, usize, Vec<usize>)>, usize),
    Later,
}

/// Runs non-transactional commands on a cluster; the replies are in order, as
/// if they had been one pipeline to one server.
///
/// Commands are grouped by the primary that serves their slot (by the slot
/// map, see [`SlotMap`]): one pipeline per primary, sent concurrently, each
/// holding its slots' commands in order. A multi-key command (`MGET`,
/// `UNLINK`) whose keys span slots is split into one command per slot, and
/// the replies of the parts are recombined. Each group is routed by redis-rs
/// to the owner of the slot of its first command. If the map was stale, a
/// command of another slot meets a redirection (MOVED, ASK, TRYAGAIN); that
/// group is then sent again as one pipeline per slot, which redis-rs routes
/// and redirects slot by slot, and the map is refreshed. (A group that was
/// redirected may have had some of its commands applied before: they are
/// applied again, as after a timeout. Writes are idempotent; an `UNLINK`
/// counts only what it removed itself.) Without a map, every group is one
/// slot. Then the commands without a key (`PUBLISH`, `INFO`) run one after
/// the other, in order: a `PUBLISH` that follows a write is sent only once
/// the write has been applied.
pub(super) async fn split<'a>(conn: &ClusterConn, cmds: &[&'a Cmd]) -> RedisResult<Vec<Value>> {
    let map = conn.view.current(&conn.conn);
    let mut groups: Vec<Group<'a>> = Vec::new();
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    let mut push = |piece: Piece<'a>| {
        let key = match map.as_deref().and_then(|m| m.owner(piece.slot)) {
            Some(node) => GroupKey::Node(node),
            None => GroupKey::Slot(piece.slot),
        };
        let g = *index.entry(key).or_insert_with(|| {
            groups.push(Group {
                by_node: matches!(key, GroupKey::Node(_)),
                pieces: Vec::new(),
            });
            groups.len() - 1
        });
        let pieces = &mut groups[g].pieces;
        pieces.push(piece);
        (g, pieces.len() - 1)
    };
    let mut replies = Vec::with_capacity(cmds.len());
    for (i, &cmd) in cmds.iter().enumerate() {
        replies.push(match plan(cmd) {
            Plan::Slot(slot) => {
                let (g, pos) = push(Piece {
                    cmd: i,
                    slot,
                    keys: None,
                });
                Reply::Whole(g, pos)
            }
            Plan::Later => Reply::Later,
            Plan::Split(combine) => {
                let keys: Vec<&[u8]> = cmd.args_iter().skip(1).map(bytes).collect();
                let slots: Vec<u16> = keys.iter().map(|k| slot_of(k)).collect();
                // Key indices by slot, in key order within a slot.
                let mut order: Vec<usize> = (0..keys.len()).collect();
                order.sort_by_key(|&k| slots[k]);
                let parts = order
                    .chunk_by(|&a, &b| slots[a] == slots[b])
                    .map(|indices| {
                        let (g, pos) = push(Piece {
                            cmd: i,
                            slot: slots[indices[0]],
                            keys: Some(indices.iter().map(|&k| keys[k]).collect()),
                        });
                        (g, pos, indices.to_vec())
                    })
                    .collect();
                Reply::Split(combine, parts, keys.len())
            }
        });
    }
    let sends = groups.iter().map(|g| send(conn, cmds, g));
    let mut values: Vec<Vec<Value>> = try_join_all(sends).await?;
    let mut take = |g: usize, pos: usize| {
        values
            .get_mut(g)
            .and_then(|r| r.get_mut(pos))
            .map(|v| std::mem::replace(v, Value::Nil))
            .unwrap_or(Value::Nil)
    };
    let mut later = conn.conn.clone();
    let mut out = Vec::with_capacity(replies.len());
    for (cmd, reply) in cmds.iter().zip(replies) {
        out.push(match reply {
            Reply::Whole(g, pos) => take(g, pos),
            Reply::Later => later.req_packed_command(cmd).await?,
            Reply::Split(combine, parts, keys) => {
                let parts = parts
                    .into_iter()
                    .map(|(g, pos, indices)| (take(g, pos), indices));
                recombine(combine, parts, keys)
            }
        });
    }
    Ok(out)
}

/// The pipeline of `pieces`.
fn build<'p, 'a: 'p>(
    cmds: &[&Cmd],
    pieces: impl ExactSizeIterator<Item = &'p Piece<'a>>,
) -> NodePipeline {
    NodePipeline::of(
        pieces.len(),
        pieces.map(|piece| {
            let cmd = cmds[piece.cmd];
            match &piece.keys {
                None => cmd.clone(),
                Some(keys) => {
                    let name = cmd.args_iter().next().map(bytes).unwrap_or_default();
                    let len = name.len() + keys.iter().map(|k| k.len()).sum::<usize>();
                    let mut part = Cmd::with_capacity(keys.len() + 1, len);
                    part.arg(name);
                    for key in keys {
                        part.arg(*key);
                    }
                    part
                }
            }
        }),
    )
}

/// Invalidates the slot map when dropped (disarmed once the group is sent).
struct Unfinished<'c>(Option<&'c ClusterConn>);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.0 {
            conn.view.invalidate(&conn.conn);
        }
    }
}

/// Sends a group; a group by primary that met a redirection is sent again
/// one pipeline per slot (see [`split`]).
async fn send(conn: &ClusterConn, cmds: &[&Cmd], group: &Group<'_>) -> RedisResult<Vec<Value>> {
    let first = group.pieces.first().map_or(0, |p| p.slot);
    // A group by primary that never completes (dropped at the caller's
    // timeout) may have been redirected back and forth by redis-rs after its
    // slots moved: the map is then read again.
    let mut unfinished = Unfinished(group.by_node.then_some(conn));
    let sent = conn
        .route_pipeline(build(cmds, group.pieces.iter()), first)
        .await;
    unfinished.0 = None;
    let err = match sent {
        Err(e) if group.by_node => e,
        other => return other,
    };
    // Grouped by a map that may be stale: read it again.
    conn.view.invalidate(&conn.conn);
    let redirected = matches!(
        err.kind(),
        redis::ErrorKind::Server(
            ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::TryAgain
        )
    );
    if !redirected || group.pieces.iter().all(|p| p.slot == first) {
        return Err(err);
    }
    let mut order: Vec<usize> = (0..group.pieces.len()).collect();
    order.sort_by_key(|&i| group.pieces[i].slot);
    let slots: Vec<&[usize]> = order
        .chunk_by(|&a, &b| group.pieces[a].slot == group.pieces[b].slot)
        .collect();
    let sends = slots.iter().map(|indices| {
        let pipe = build(cmds, indices.iter().map(|&i| &group.pieces[i]));
        conn.route_pipeline(pipe, group.pieces[indices[0]].slot)
    });
    let parts = try_join_all(sends).await?;
    let mut out = vec![Value::Nil; group.pieces.len()];
    for (indices, replies) in slots.into_iter().zip(parts) {
        for (&i, v) in indices.iter().zip(replies) {
            out[i] = v;
        }
    }
    Ok(out)
}

/// One reply from the parts of a split command (an error reply of a part is
/// the reply).
fn recombine(
    combine: Combine,
    parts: impl Iterator<Item = (Value, Vec<usize>)>,
    keys: usize,
) -> Value {
    let mut values = vec![Value::Nil; if combine == Combine::Values { keys } else { 0 }];
    let mut count = 0i64;
    for (reply, indices) in parts {
        match (combine, reply) {
            (Combine::Values, Value::Array(vs)) => {
                for (i, v) in indices.into_iter().zip(vs) {
                    if let Some(slot) = values.get_mut(i) {
                        *slot = v;
                    }
                }
            }
            (Combine::Count, Value::Int(n)) => count = count.saturating_add(n),
            (_, other) => return other,
        }
    }
    match combine {
        Combine::Values => Value::Array(values),
        Combine::Count => Value::Int(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(key: &str) -> Plan {
        Plan::Slot(slot_of(key.as_bytes()))
    }

    #[test]
    fn commands_are_planned_by_the_slot_of_their_keys() {
        assert_eq!(plan(redis::cmd("GET").arg("a")), slot("a"));
        assert_eq!(plan(redis::cmd("get").arg("a")), slot("a"));
        assert_eq!(plan(redis::cmd("PUBLISH").arg("ch").arg("x")), Plan::Later);
        assert_eq!(plan(redis::cmd("MGET").arg("{t}1").arg("{t}2")), slot("t"));
        // "a" and "b" hash to different slots.
        assert_ne!(slot("a"), slot("b"));
        assert_eq!(
            plan(redis::cmd("MGET").arg("a").arg("b")),
            Plan::Split(Combine::Values)
        );
        assert_eq!(
            plan(redis::cmd("unlink").arg("a").arg("b")),
            Plan::Split(Combine::Count)
        );
        assert_eq!(
            plan(
                redis::cmd("EVAL")
                    .arg("return 1")
                    .arg(2)
                    .arg("{x}a")
                    .arg("{x}b")
                    .arg("v")
            ),
            slot("x")
        );
        assert_eq!(plan(redis::cmd("EVAL").arg("return 1").arg(0)), Plan::Later);
        assert_eq!(
            plan(redis::cmd("EVAL").arg("return 1").arg(2).arg("a").arg("b")),
            Plan::Later
        );
        assert_eq!(plan(&redis::cmd("MGET")), Plan::Later);
    }

    #[test]
    fn pipelines_of_one_slot_are_not_split() {
        let mut p = redis::pipe();
        p.cmd("UNLINK")
            .arg("{k}lease")
            .cmd("UNLINK")
            .arg("{k}")
            .cmd("PUBLISH")
            .arg("ch")
            .arg("m");
        assert_eq!(one_slot(&p), None, "PUBLISH is sent after the rest");
        let mut q = redis::pipe();
        q.cmd("GET").arg("{k}").cmd("PTTL").arg("{k}");
        assert_eq!(one_slot(&q), Some(slot_of(b"k")));
        q.cmd("GET").arg("other");
        assert_eq!(one_slot(&q), None);
        let mut m = redis::pipe();
        m.cmd("MGET").arg("a").arg("b");
        assert_eq!(one_slot(&m), None);
    }

    #[test]
    fn parts_carry_their_keys() {
        let mget = redis::cmd("MGET").arg("a").arg("b").clone();
        let pieces = [
            Piece {
                cmd: 0,
                slot: slot_of(b"b"),
                keys: Some(vec![b"b".as_slice()]),
            },
            Piece {
                cmd: 1,
                slot: slot_of(b"k"),
                keys: None,
            },
        ];
        let get = redis::cmd("GET").arg("k").clone();
        let pipe = build(&[&mget, &get], pieces.iter());
        let packed: Vec<Vec<u8>> = pipe.pipe.cmd_iter().map(Cmd::get_packed_command).collect();
        assert_eq!(pipe.offset, 1, "the PING's reply is skipped");
        assert_eq!(
            packed,
            vec![
                redis::cmd("PING").get_packed_command(),
                redis::cmd("MGET").arg("b").get_packed_command(),
                get.get_packed_command()
            ]
        );
    }

    #[test]
    fn a_pipeline_of_one_command_has_no_ping() {
        let get = redis::cmd("GET").arg("k").clone();
        let pipe = NodePipeline::of(1, std::iter::once(get));
        assert_eq!(pipe.offset, 0);
        assert_eq!(pipe.pipe.len(), 1);
    }

    #[test]
    fn split_replies_are_recombined_in_key_order() {
        let parts = vec![
            (Value::Array(vec![Value::Int(1), Value::Int(3)]), vec![0, 2]),
            (Value::Array(vec![Value::Int(2)]), vec![1]),
        ];
        assert_eq!(
            recombine(Combine::Values, parts.into_iter(), 3),
            Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
        );
        let parts = vec![(Value::Int(2), vec![0, 1]), (Value::Int(1), vec![2])];
        assert_eq!(
            recombine(Combine::Count, parts.into_iter(), 3),
            Value::Int(3)
        );
    }
}
