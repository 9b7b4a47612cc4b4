//! Listeners and connections: one accept thread per listener, one thread per connection, one
//! request per connection. Every socket read and write has a timeout, the number of live
//! connections is capped, and whatever a client does only ends its own connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::api::{self, Handled};
use crate::http::{self, ReadError, Response};
use crate::state::State;

/// Socket read/write timeout: a client this slow is broken.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Live connections per listener beyond which new ones are closed at once.
const MAX_CONNECTIONS: usize = 256;

/// Which handler a listener runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The Duo API (HTTPS).
    Api,
    /// The control API and phone page (plain HTTP).
    Control,
}

/// Start the accept thread of one listener.
pub(crate) fn spawn(
    listener: TcpListener,
    role: Role,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<State>,
) -> std::io::Result<JoinHandle<()>> {
    let live = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name(format!("duo-sim-{role:?}").to_lowercase())
        .spawn(move || {
            for conn in listener.incoming() {
                if state.shutdown.load(Ordering::SeqCst) {
                    break;
                }
                let stream = match conn {
                    Ok(s) => s,
                    Err(_) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                if live.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    continue;
                }
                live.fetch_add(1, Ordering::SeqCst);
                let (state, tls, live2) = (state.clone(), tls.clone(), live.clone());
                let spawned = std::thread::Builder::new()
                    .name("duo-sim-conn".into())
                    .spawn(move || {
                        serve(stream, role, tls, &state);
                        live2.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    live.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
}

/// Unblock a listener's `accept` so its thread sees the shutdown flag.
pub(crate) fn wake(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

fn serve(stream: TcpStream, role: Role, tls: Option<Arc<rustls::ServerConfig>>, state: &State) {
    if stream.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    match tls {
        Some(cfg) => {
            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                return;
            };
            let mut tls_stream = rustls::StreamOwned::new(conn, stream);
            exchange(&mut tls_stream, role, state);
            // Not `flush()`: on a connection whose handshake never finished it would go on
            // reading until the timeout. Write out what is queued (the answer's tail, an alert,
            // close_notify) and hang up.
            let rustls::StreamOwned { conn, sock } = &mut tls_stream;
            if !conn.is_handshaking() {
                conn.send_close_notify();
            }
            while conn.wants_write() {
                if conn.write_tls(sock).is_err() {
                    break;
                }
            }
        }
        None => {
            let mut stream = stream;
            exchange(&mut stream, role, state);
        }
    }
}

/// Read one request, answer it. I/O errors just end the connection.
fn exchange(stream: &mut (impl Read + Write), role: Role, state: &State) {
    let handled = match http::read_request(stream) {
        Ok(req) => match role {
            Role::Api => api::handle(state, &req),
            Role::Control => crate::control::handle(state, &req),
        },
        Err(ReadError::Io) => return,
        Err(ReadError::Bad(status, why)) => {
            let response = match role {
                Role::Api => api::fail(u32::from(status) * 100, why, None),
                Role::Control => Response::new(status, "text/plain", why),
            };
            Handled {
                response,
                log: format!("bad request -> {status} {why}"),
            }
        }
    };
    if state.settings.log && !handled.log.is_empty() {
        eprintln!("duo-sim: {}", handled.log);
    }
    let _ = handled.response.write_to(stream);
}
