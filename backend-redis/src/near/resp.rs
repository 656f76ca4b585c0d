//! The little of RESP3 the invalidation connection speaks: commands out (arrays of bulk strings)
//! and replies and pushes in, parsed from a buffer that may hold a partial frame.

/// One parsed frame. Only what the invalidation connection acts on is kept: strings (simple,
/// bulk, verbatim), errors, nulls and aggregates; numbers, booleans and the like are `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `+...`, `$...`, `=...`.
    Str(Vec<u8>),
    /// `-...` or `!...`.
    Error(String),
    /// `_`, `$-1`, `*-1`.
    Null,
    /// `*...`, `~...`, `%...` (flattened key, value, ...), `|...` (attributes).
    Array(Vec<Frame>),
    /// `>...`: a push message (invalidations).
    Push(Vec<Frame>),
    /// `:`.
    Int(i64),
    /// `#`, `,`, `(`.
    Other,
}

/// Why a buffer did not yield a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// The frame is not complete yet: read more.
    Incomplete,
    /// Not RESP: the connection cannot be trusted any more.
    Invalid,
}

/// The longest aggregate or string accepted (a key name is far shorter): a bound on what a
/// corrupt length can make this allocate.
const MAX_LEN: usize = 512 * 1024 * 1024;
/// The deepest nesting accepted (`HELLO`'s reply nests three levels).
const MAX_DEPTH: usize = 8;

/// Parses one frame from the start of `buf`: the frame and the bytes it used.
pub(crate) fn parse(buf: &[u8]) -> Result<(Frame, usize), ParseError> {
    let mut at = 0;
    let frame = parse_at(buf, &mut at, 0)?;
    Ok((frame, at))
}

fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<&'a [u8], ParseError> {
    let rest = buf.get(*at..).ok_or(ParseError::Incomplete)?;
    let end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(ParseError::Incomplete)?;
    *at += end + 2;
    Ok(&rest[..end])
}

fn length(text: &[u8]) -> Result<Option<usize>, ParseError> {
    if text == b"-1" {
        return Ok(None);
    }
    let n: usize = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(ParseError::Invalid)?;
    if n > MAX_LEN {
        return Err(ParseError::Invalid);
    }
    Ok(Some(n))
}

fn parse_at(buf: &[u8], at: &mut usize, depth: usize) -> Result<Frame, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError::Invalid);
    }
    let kind = *buf.get(*at).ok_or(ParseError::Incomplete)?;
    *at += 1;
    let head = line(buf, at)?;
    match kind {
        b'+' => Ok(Frame::Str(head.to_vec())),
        b'-' => Ok(Frame::Error(String::from_utf8_lossy(head).into_owned())),
        b'_' => Ok(Frame::Null),
        b':' => std::str::from_utf8(head)
            .ok()
            .and_then(|t| t.parse().ok())
            .map(Frame::Int)
            .ok_or(ParseError::Invalid),
        b'#' | b',' | b'(' => Ok(Frame::Other),
        b'$' | b'=' | b'!' => {
            let Some(n) = length(head)? else {
                return Ok(Frame::Null);
            };
            let end = at.checked_add(n).ok_or(ParseError::Invalid)?;
            let body = buf.get(*at..end).ok_or(ParseError::Incomplete)?;
            if buf.get(end..end + 2).ok_or(ParseError::Incomplete)? != b"\r\n" {
                return Err(ParseError::Invalid);
            }
            *at = end + 2;
            Ok(match kind {
                b'!' => Frame::Error(String::from_utf8_lossy(body).into_owned()),
                _ => Frame::Str(body.to_vec()),
            })
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Some(n) = length(head)? else {
                return Ok(Frame::Null);
            };
            let n = if matches!(kind, b'%' | b'|') {
                n * 2
            } else {
                n
            };
            // Every element takes at least 3 bytes: a count the buffer cannot hold is incomplete.
            if n > buf.len().saturating_sub(*at) {
                return Err(ParseError::Incomplete);
            }
            // Capped: a hostile count must not allocate on every look at an incomplete frame.
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                items.push(parse_at(buf, at, depth + 1)?);
            }
            if kind == b'|' {
                // Attributes precede the frame they describe: return that frame (one level
                // deeper, so that a chain of attributes is bounded like any nesting).
                return parse_at(buf, at, depth + 1);
            }
            Ok(if kind == b'>' {
                Frame::Push(items)
            } else {
                Frame::Array(items)
            })
        }
        _ => Err(ParseError::Invalid),
    }
}

/// A command as RESP: an array of bulk strings.
pub(crate) fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pushes_replies_and_partial_frames() {
        let push = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$3\r\nk:1\r\n$3\r\nk:2\r\n";
        let (frame, used) = parse(push).unwrap();
        assert_eq!(used, push.len());
        assert_eq!(
            frame,
            Frame::Push(vec![
                Frame::Str(b"invalidate".to_vec()),
                Frame::Array(vec![
                    Frame::Str(b"k:1".to_vec()),
                    Frame::Str(b"k:2".to_vec())
                ]),
            ])
        );
        for cut in 0..push.len() {
            assert_eq!(
                parse(&push[..cut]),
                Err(ParseError::Incomplete),
                "cut at {cut}"
            );
        }
        let flush = b">2\r\n$10\r\ninvalidate\r\n_\r\n+OK\r\n";
        let (frame, used) = parse(flush).unwrap();
        assert_eq!(
            frame,
            Frame::Push(vec![Frame::Str(b"invalidate".to_vec()), Frame::Null])
        );
        assert_eq!(parse(&flush[used..]).unwrap().0, Frame::Str(b"OK".to_vec()));
        let hello = b"%2\r\n+server\r\n+redis\r\n+modules\r\n*0\r\n";
        assert!(matches!(parse(hello).unwrap().0, Frame::Array(a) if a.len() == 4));
        assert_eq!(
            parse(b"-ERR bad\r\n").unwrap().0,
            Frame::Error("ERR bad".into())
        );
        assert_eq!(parse(b":12\r\n").unwrap().0, Frame::Int(12));
        assert_eq!(parse(b"#t\r\n").unwrap().0, Frame::Other);
    }

    #[test]
    fn garbage_and_hostile_lengths_are_invalid_not_panics() {
        assert_eq!(parse(b"?\r\n"), Err(ParseError::Invalid));
        assert_eq!(parse(b"$x\r\n"), Err(ParseError::Invalid));
        assert_eq!(parse(b"$99999999999\r\n"), Err(ParseError::Invalid));
        assert_eq!(parse(b"*100000\r\n"), Err(ParseError::Incomplete));
        assert_eq!(parse(b"$3\r\nabcXY"), Err(ParseError::Invalid));
        let deep = "*1\r\n".repeat(20);
        assert_eq!(parse(deep.as_bytes()), Err(ParseError::Invalid));
        let attributes = "|0\r\n".repeat(100_000);
        assert_eq!(parse(attributes.as_bytes()), Err(ParseError::Invalid));
        assert_eq!(
            parse(b"|1\r\n+a\r\n+b\r\n+OK\r\n").unwrap().0,
            Frame::Str(b"OK".to_vec())
        );
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command(&[b"CLIENT", b"ID"]),
            b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n".to_vec()
        );
    }
}
