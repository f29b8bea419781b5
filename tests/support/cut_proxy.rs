//! A TCP proxy in front of a test server that the test can cut: after a given number of
//! bytes sent towards the server, every open connection is dropped mid-stream and new ones are
//! closed at once, as a server that went away would look, until the test restores it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct CutProxy {
    /// `http://127.0.0.1:PORT`, to use instead of the server's endpoint.
    pub endpoint: String,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    /// Bytes still allowed towards the server before the cut (`i64::MAX`: no cut armed).
    budget: AtomicI64,
    /// Bytes forwarded towards the server in all.
    forwarded: AtomicU64,
    cut: watch::Sender<bool>,
}

impl CutProxy {
    /// Forwards to `upstream` (`http://host:port`) until cut.
    pub async fn start(upstream: &str) -> CutProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream is host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream,
            budget: AtomicI64::new(i64::MAX),
            forwarded: AtomicU64::new(0),
            cut: watch::channel(false).0,
        });
        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if *shared.cut.borrow() {
                        // Down: the connection closes before any answer.
                        drop(client);
                        continue;
                    }
                    tokio::spawn(relay(shared.clone(), client));
                }
            }
        });
        CutProxy {
            endpoint,
            shared,
            accept,
        }
    }

    /// Cuts every connection once `bytes` more bytes went towards the server.
    pub fn cut_after(&self, bytes: u64) {
        self.shared
            .budget
            .store(i64::try_from(bytes).unwrap(), Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        *self.shared.cut.borrow()
    }

    /// Forwards again, with no cut armed.
    pub fn restore(&self) {
        self.shared.budget.store(i64::MAX, Ordering::SeqCst);
        self.shared.cut.send_replace(false);
    }

    /// Bytes forwarded towards the server so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.cut.send_replace(true);
    }
}

/// Relays one connection both ways until either side closes or the proxy is cut.
async fn relay(shared: Arc<Shared>, client: TcpStream) {
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let mut cut = shared.cut.subscribe();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let towards_server = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buffer).await?;
            if n == 0 {
                return server_write.shutdown().await;
            }
            let left = shared.budget.fetch_sub(n as i64, Ordering::SeqCst) - n as i64;
            if left < 0 {
                // The cut: this chunk never arrives, and nothing more does.
                shared.cut.send_replace(true);
                return Ok(());
            }
            server_write.write_all(&buffer[..n]).await?;
            shared.forwarded.fetch_add(n as u64, Ordering::SeqCst);
        }
    };
    let towards_client = tokio::io::copy(&mut server_read, &mut client_write);
    // Whichever ends first ends the connection: both halves are dropped on return.
    tokio::select! {
        _ = towards_server => {}
        _ = towards_client => {}
        _ = cut.wait_for(|down| *down) => {}
    }
}
