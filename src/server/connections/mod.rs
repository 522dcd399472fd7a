//! Limits on client connections, before any request is parsed: how many connections in all and per
//! client address, how long a request head may take to arrive, and how many bytes of it s3p buffers.
//!
//! pingora reads a request head with a per-read timeout (a byte every few seconds keeps a connection for
//! ever) and buffers up to 1 MiB of it before s3p sees anything. So s3p wraps pingora's HTTP application
//! ([`GuardedApp`]) and each client connection ([`GuardedStream`]):
//! - at the first request of a connection, the global and per-client connection counts are taken (a
//!   connection over either cap gets a 503 SlowDown and is closed);
//! - while a request head is being read, reads stop at `max_header_bytes` plus a small slack (never more
//!   is buffered) and the whole head must arrive within `header_timeout_ms`, counted from the connection's
//!   start for its first request and from the first byte for later ones; past either, s3p answers 400
//!   (`RequestHeaderSectionTooLarge` / `RequestTimeout`) itself and closes.
//!
//! A head ends at the first empty line; the next head starts once s3p has begun a final (non-1xx)
//! response. [`HeadScanner`] is that bookkeeping, pure and tested alone.
//!
//! One file per concern: [`head`] (the head bookkeeping), [`caps`] (the connection counts and the one
//! admission of a connection, plain or before its TLS handshake), [`stream`] (the client connection as
//! pingora reads it), [`tls`] (TLS connections before their handshake), [`answer`] (the answers written
//! below pingora), [`app`] (pingora's application behind all this).

mod answer;
mod app;
mod caps;
mod head;
mod stream;
mod tls;

pub use app::GuardedApp;
pub use caps::{ConnectionLimits, ConnectionRefusal, ConnectionSlot};
pub use head::{HeadEvent, HeadScanner, HeadState, Tail};
pub use stream::{GuardedStream, REJECTED_BY_PINGORA};
pub use tls::{Handshakes, TlsGuard};
