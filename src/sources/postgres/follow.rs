//! Following a CDC slot for `syncline stream`: one replication connection that stays open
//! for the life of the stream, decoding changes as they commit and sending them, in commit
//! order, through a bounded channel ([`crate::sources::Follower`]).
//!
//! The slot moves only when the pipeline says a load committed and its state was saved
//! (`Source::committed`, which sets [`Confirmed`]); the next standby status update reports
//! that position as flushed, so the server frees the WAL before it over this same connection
//! (no second connection, no `pg_replication_slot_advance` while the slot is in use).
//!
//! Idle slots: the server tells, in keepalives, how far it read its WAL; between
//! transactions nothing before that is still to come for the stream, so the follower sends
//! it as [`Followed::Progress`] and the pipeline saves it as the cursor now and then, which
//! lets the slot advance over WAL that held nothing for the stream. Status updates report the
//! position heard (as written), so the server keeps telling how far it read.
//!
//! Backpressure: when the channel is full the follower stops reading the connection (the
//! server then stops sending), and keeps sending status updates while it waits so the server
//! does not end the connection for silence.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pg_walstream::{
    CancellationToken, EventType, Lsn, PgOutputDecoder, PgReplicationConnection,
    parse_keepalive_message,
};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tracing::{info, warn};

use super::PostgresSourceError;
use super::cdc::{self, ChangeDecoder, PROTOCOL_VERSION, replication_error, replication_url};
use super::sql::templates;
use crate::Result;
use crate::sources::Followed;

/// How long one read of the connection waits before the follower looks whether it owes the
/// server a status update.
const TICK: Duration = Duration::from_millis(250);

/// A status update goes at least this often, even with nothing new to report: it is the
/// heartbeat that keeps the server from ending a quiet connection (`wal_sender_timeout`).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// New positions are reported at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The position the pipeline confirmed: saved as the stream's cursor after its load
/// committed. Reported to the server as flushed.
#[derive(Debug)]
pub struct Confirmed(pub AtomicI64);

/// What a follower task needs, beside the decoder.
pub(super) struct FollowTask {
    pub client: Client,
    pub url: String,
    pub slot: String,
    pub since: i64,
    /// How long the server may say nothing before the follower looks whether its
    /// walsender still holds the slot (`cdc::silence_limit`).
    pub silence: Duration,
    pub confirmed: Arc<Confirmed>,
    pub lag_bytes: Arc<AtomicI64>,
    pub sender: mpsc::Sender<Result<Followed>>,
}

impl FollowTask {
    /// Reads the slot until the receiver is gone, an error, or a clean stop.
    pub(super) async fn run(self, mut decoder: ChangeDecoder) -> Result<()> {
        let FollowTask {
            client,
            url,
            slot,
            since,
            silence,
            confirmed,
            lag_bytes,
            sender,
        } = self;
        let mut connection = PgReplicationConnection::connect(&replication_url(&url))
            .map_err(replication_error("connect"))?;
        connection
            .exec(templates::SESSION_SETTINGS)
            .map_err(replication_error("set up the replication session"))?;
        let publications = format!("\"{slot}\"");
        let protocol = PROTOCOL_VERSION.to_string();
        connection
            .start_replication(
                &slot,
                since as u64,
                &[
                    ("proto_version", protocol.as_str()),
                    ("publication_names", publications.as_str()),
                ],
            )
            .map_err(replication_error("start replication"))?;
        info!(slot, from = %cdc::format_lsn(since), "following the replication slot");
        let mut wal = PgOutputDecoder::with_protocol_version(PROTOCOL_VERSION);
        let cancel = CancellationToken::new();
        let mut status = Status {
            heard_to: since as u64,
            reported: (0, 0),
            at: tokio::time::Instant::now(),
            confirmed,
        };
        // The commit time of the transaction being read, and of the oldest one whose
        // changes wait in the decoder.
        let mut transaction_at: Option<DateTime<Utc>> = None;
        let mut oldest: Option<DateTime<Utc>> = None;
        let mut sent_to = since;
        let mut last_heard = tokio::time::Instant::now();
        loop {
            status.report(&mut connection, false).await?;
            lag_bytes.store(
                (status.heard_to as i64).saturating_sub(status.confirmed()),
                Ordering::Relaxed,
            );
            // Reading a frame is cancel-safe: a partial frame stays in the connection's buffer.
            let read = tokio::time::timeout(TICK, connection.get_copy_data_async(&cancel)).await;
            let frame = match read {
                Err(_) => {
                    if last_heard.elapsed() >= silence {
                        // A connection that died without a word (a network cut) only shows
                        // as silence: the heartbeat asks for a reply, and a walsender busy
                        // with one huge WAL record still holds the slot.
                        let holding = cdc::slot_info(&client, &slot)
                            .await?
                            .is_some_and(|info| info.active);
                        if !holding {
                            return Err(PostgresSourceError::Silent {
                                slot,
                                seconds: silence.as_secs(),
                            }
                            .into());
                        }
                        last_heard = tokio::time::Instant::now();
                    }
                    continue;
                }
                Ok(Err(err)) => return Err(replication_error("read changes")(err).into()),
                Ok(Ok(frame)) => frame,
            };
            last_heard = tokio::time::Instant::now();
            match frame.first() {
                Some(b'k') => {
                    let keepalive = parse_keepalive_message(&frame)
                        .map_err(replication_error("read a keepalive"))?;
                    status.heard_to = status.heard_to.max(keepalive.wal_end);
                    decoder.server_read_to(keepalive.wal_end as i64);
                    if keepalive.reply_requested {
                        status.report(&mut connection, true).await?;
                    }
                    if decoder.read_to > sent_to && !decoder.has_rows() {
                        // Progress is cumulative: when the channel is full, a later item
                        // carries it.
                        let read_to = decoder.read_to;
                        if sender.try_send(Ok(Followed::Progress { read_to })).is_ok() {
                            sent_to = read_to;
                        }
                    }
                }
                Some(b'w') if frame.len() >= 25 => {
                    let start = u64::from_be_bytes(frame[1..9].try_into().expect("8 bytes"));
                    let wal_end = u64::from_be_bytes(frame[9..17].try_into().expect("8 bytes"));
                    status.heard_to = status.heard_to.max(wal_end);
                    let body = frame.slice(25..);
                    if body.is_empty() {
                        continue;
                    }
                    let Some(event) = wal
                        .decode_message(body, Lsn::new(start))
                        .map_err(replication_error("decode a change"))?
                    else {
                        continue;
                    };
                    let commit = match &event.event_type {
                        EventType::Begin {
                            commit_timestamp, ..
                        } => {
                            transaction_at = Some(*commit_timestamp);
                            false
                        }
                        EventType::Commit { .. } => true,
                        _ => false,
                    };
                    if let Some(reason) = decoder.take(event)? {
                        // Everything before this transaction goes out, then the stop.
                        let read_to = decoder.read_to;
                        if decoder.has_rows() {
                            let item = changes(&client, &mut decoder, oldest.take()).await?;
                            if !status.send(&mut connection, &sender, item).await? {
                                return Ok(());
                            }
                        }
                        let _ = sender.send(Ok(Followed::Stopped { read_to, reason })).await;
                        return Ok(());
                    }
                    if decoder.has_rows() && oldest.is_none() {
                        oldest = transaction_at;
                    }
                    // A batch goes out at each commit (the pipeline decides when to flush),
                    // or inside a long transaction when it is full (bounded memory).
                    if (commit && decoder.has_rows()) || decoder.full() {
                        let item = changes(&client, &mut decoder, oldest.take()).await?;
                        sent_to = decoder.read_to;
                        if !status.send(&mut connection, &sender, item).await? {
                            return Ok(());
                        }
                    } else if commit && decoder.read_to > sent_to {
                        let read_to = decoder.read_to;
                        if sender.try_send(Ok(Followed::Progress { read_to })).is_ok() {
                            sent_to = read_to;
                        }
                    }
                }
                _ => warn!(slot, "unexpected replication message"),
            }
        }
    }
}

/// The decoder's buffered changes as one item.
async fn changes(
    client: &Client,
    decoder: &mut ChangeDecoder,
    committed_at: Option<DateTime<Utc>>,
) -> Result<Followed> {
    let (batch, dead) = decoder.finish_batch(client).await?;
    Ok(Followed::Changes {
        batch,
        dead,
        read_to: decoder.read_to,
        committed_at,
    })
}

/// What the follower last told the server.
struct Status {
    /// The server's WAL position as last heard (reported as written).
    heard_to: u64,
    /// (written, flushed) as last reported.
    reported: (u64, u64),
    at: tokio::time::Instant,
    confirmed: Arc<Confirmed>,
}

impl Status {
    fn confirmed(&self) -> i64 {
        self.confirmed.0.load(Ordering::SeqCst)
    }

    /// Sends a status update when something new is to report (at most every
    /// [`STATUS_EVERY`]), when the heartbeat is due, or when `now`.
    async fn report(&mut self, connection: &mut PgReplicationConnection, now: bool) -> Result<()> {
        let flushed = self.confirmed().max(0) as u64;
        let position = (self.heard_to.max(flushed), flushed);
        let elapsed = self.at.elapsed();
        let heartbeat = elapsed >= HEARTBEAT;
        if now || heartbeat || (position != self.reported && elapsed >= STATUS_EVERY) {
            // The heartbeat asks for a reply: an idle server otherwise says nothing, and
            // silence is how a dead connection shows.
            connection
                .send_standby_status_update(position.0, position.1, position.1, heartbeat)
                .await
                .map_err(replication_error("send a status update"))?;
            self.reported = position;
            self.at = tokio::time::Instant::now();
        }
        Ok(())
    }

    /// Sends `item`, waiting while the channel is full (backpressure) and keeping the
    /// connection alive meanwhile. False when the receiver is gone.
    async fn send(
        &mut self,
        connection: &mut PgReplicationConnection,
        sender: &mpsc::Sender<Result<Followed>>,
        item: Followed,
    ) -> Result<bool> {
        loop {
            match tokio::time::timeout(STATUS_EVERY, sender.reserve()).await {
                Ok(Ok(permit)) => {
                    permit.send(Ok(item));
                    return Ok(true);
                }
                Ok(Err(_)) => return Ok(false),
                Err(_) => self.report(connection, false).await?,
            }
        }
    }
}
