//! The pure bookkeeping of request heads on one connection: where a head ends, how many bytes of it have
//! been read, and when the next one starts. [`super::GuardedStream`] applies it to the bytes it passes.

/// Bytes read past `max_header_bytes` before a head is refused: s3p's own check then answers the
/// common case (a head a little too large) from within the request, with its request id and audit line.
const HEAD_SLACK: usize = 1024;

/// Where a connection stands in reading request heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadState {
    /// Reading a head: bytes so far, and whether the bytes read end with `\n` or `\n\r` (an empty
    /// line may be split across reads).
    Head { bytes: usize, tail: Tail },
    /// The head is complete; what follows is a body or the next, pipelined request, until s3p starts
    /// a final response.
    Passthrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    Other,
    Newline,
    NewlineReturn,
}

/// What a read did to the head being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadEvent {
    /// Not in a head, or the head goes on within its cap.
    Ok,
    /// This read completed the head.
    Complete,
    /// The head grew past its cap without ending.
    TooLarge,
}

/// The pure bookkeeping of request heads on one connection.
#[derive(Debug, Clone)]
pub struct HeadScanner {
    pub cap: usize,
    pub state: HeadState,
}

impl HeadScanner {
    pub fn new(cap: usize) -> HeadScanner {
        HeadScanner {
            cap,
            state: HeadState::Head {
                bytes: 0,
                tail: Tail::Other,
            },
        }
    }

    /// How many bytes the next read may take: in a head, no more than the cap plus slack allows.
    pub fn allowance(&self) -> usize {
        match self.state {
            HeadState::Head { bytes, .. } => (self.cap + HEAD_SLACK).saturating_sub(bytes),
            HeadState::Passthrough => usize::MAX,
        }
    }

    pub fn in_head(&self) -> bool {
        matches!(self.state, HeadState::Head { .. })
    }

    /// Bytes of the current head read so far (0 outside a head).
    pub fn head_bytes(&self) -> usize {
        match self.state {
            HeadState::Head { bytes, .. } => bytes,
            HeadState::Passthrough => 0,
        }
    }

    /// Accounts for bytes read from the client.
    pub fn on_read(&mut self, data: &[u8]) -> HeadEvent {
        let HeadState::Head { bytes, mut tail } = self.state else {
            return HeadEvent::Ok;
        };
        // A head ends at an empty line: `\n\n` or `\n\r\n` (httparse accepts bare LF line ends too).
        // Only line ends need a look: each `\n` is checked against the one or two bytes before it
        // (from this read, or the tail of the previous one).
        let mut last_newline = None;
        for i in memchr::memchr_iter(b'\n', data) {
            let before = match i {
                0 => tail,
                1 if data[0] == b'\r' => match tail {
                    Tail::Newline => Tail::NewlineReturn,
                    _ => Tail::Other,
                },
                _ if data[i - 1] == b'\n' => Tail::Newline,
                _ if i >= 2 && data[i - 1] == b'\r' && data[i - 2] == b'\n' => Tail::NewlineReturn,
                _ => Tail::Other,
            };
            if before != Tail::Other {
                if bytes + i + 1 > self.cap + HEAD_SLACK {
                    return HeadEvent::TooLarge;
                }
                self.state = HeadState::Passthrough;
                return HeadEvent::Complete;
            }
            last_newline = Some(i);
        }
        tail = match (data.len(), last_newline) {
            (0, _) => tail,
            (n, Some(i)) if i == n - 1 => Tail::Newline,
            (n, Some(i)) if i + 2 == n && data[n - 1] == b'\r' => Tail::NewlineReturn,
            (1, None) if data[0] == b'\r' && tail == Tail::Newline => Tail::NewlineReturn,
            _ => Tail::Other,
        };
        let bytes = bytes + data.len();
        self.state = HeadState::Head { bytes, tail };
        if bytes > self.cap {
            HeadEvent::TooLarge
        } else {
            HeadEvent::Ok
        }
    }

    /// Accounts for bytes written to the client: the start of a final response means the next bytes
    /// read begin a new head. (Interim `100 Continue` answers come before a request body.) Returns
    /// whether `data` starts a final response.
    pub fn on_write(&mut self, data: &[u8]) -> bool {
        if self.state == HeadState::Passthrough
            && data.starts_with(b"HTTP/1.")
            && data.get(9).is_some_and(|c| *c != b'1')
        {
            self.state = HeadState::Head {
                bytes: 0,
                tail: Tail::Other,
            };
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_at_an_empty_line_split_anywhere() {
        let head = b"GET /s3p/immuta HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 0..head.len() {
            let mut s = HeadScanner::new(1000);
            let first = s.on_read(&head[..split]);
            let second = s.on_read(&head[split..]);
            let events = [first, second];
            assert_eq!(
                events.iter().filter(|e| **e == HeadEvent::Complete).count(),
                1,
                "split at {split}: {events:?}"
            );
            assert!(!s.in_head());
        }
        // Bare LF line ends, as httparse accepts them.
        let mut s = HeadScanner::new(1000);
        assert_eq!(
            s.on_read(b"GET / HTTP/1.1\nHost: x\n\nrest"),
            HeadEvent::Complete
        );
        // A lone CR LF in a header value is not an empty line.
        let mut s = HeadScanner::new(1000);
        assert_eq!(s.on_read(b"GET / HTTP/1.1\r\nA: b\r\n"), HeadEvent::Ok);
    }

    #[test]
    fn byte_by_byte_and_chunked_reads_find_the_same_end_as_a_plain_search() {
        let heads: [&[u8]; 4] = [
            b"GET / HTTP/1.1\r\nA: b\r\n\r\nBODY",
            b"GET / HTTP/1.1\nA: b\n\nBODY",
            b"GET / HTTP/1.1\r\nA: \r\r\n\r\nBODY",
            b"GET / HTTP/1.1\r\nA: b\n\r\nBODY",
        ];
        for head in heads {
            // Where a naive scan says the head ends: the first `\n\n` or `\n\r\n`.
            let end = (0..head.len())
                .find(|&i| {
                    head[i] == b'\n'
                        && ((i >= 1 && head[i - 1] == b'\n')
                            || (i >= 2 && head[i - 1] == b'\r' && head[i - 2] == b'\n'))
                })
                .unwrap()
                + 1;
            for chunk in 1..=head.len() {
                let mut s = HeadScanner::new(1000);
                let mut read = 0;
                let mut completed_in = None;
                for piece in head.chunks(chunk) {
                    if s.on_read(piece) == HeadEvent::Complete {
                        completed_in = Some(read..read + piece.len());
                        break;
                    }
                    read += piece.len();
                }
                let piece = completed_in.unwrap_or_else(|| panic!("{head:?} in chunks of {chunk}"));
                // The read that completed the head is the one holding its last byte.
                assert!(
                    piece.start < end && end <= piece.end,
                    "{head:?} chunk {chunk}: {piece:?}"
                );
            }
        }
    }

    #[test]
    fn a_head_past_its_cap_is_refused_and_reads_are_bounded() {
        let mut s = HeadScanner::new(100);
        assert_eq!(s.allowance(), 100 + HEAD_SLACK);
        assert_eq!(s.on_read(&[b'a'; 60]), HeadEvent::Ok);
        assert_eq!(s.allowance(), 40 + HEAD_SLACK);
        assert_eq!(s.on_read(&[b'a'; 41]), HeadEvent::TooLarge);
        // A head that ends within the slack is left to s3p's own check (which answers with an audit line).
        let mut s = HeadScanner::new(10);
        let mut head = vec![b'a'; 50];
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(s.on_read(&head), HeadEvent::Complete);
    }

    #[test]
    fn a_final_response_starts_the_next_head_and_interim_ones_do_not() {
        let mut s = HeadScanner::new(100);
        s.on_read(b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        assert!(!s.in_head());
        assert!(!s.on_write(b"HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(!s.in_head(), "the body follows a 100 Continue");
        assert_eq!(
            s.on_read(&[b'x'; 10_000]),
            HeadEvent::Ok,
            "body bytes are not a head"
        );
        s.on_write(b"body bytes that are not a status line");
        assert!(!s.in_head());
        s.on_write(b"HTTP/1.1 200 OK\r\n");
        assert!(s.in_head());
        assert_eq!(s.head_bytes(), 0);
    }
}
