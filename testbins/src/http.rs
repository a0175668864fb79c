//! Just enough HTTP/1.1 for the echo server and the toolbox client.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// A request line and the headers the echo server cares about.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub keep_alive: bool,
}

/// Requests bigger than this are refused: the echo server only takes small GETs.
const MAX_HEAD: usize = 16 * 1024;

/// Reads one request head (and discards any body). `Ok(None)` at a clean EOF.
pub fn read_request<R: BufRead>(reader: &mut R) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let mut keep_alive = version == "HTTP/1.1";
    let mut content_length = 0usize;
    let mut head = line.len();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "headers cut short",
            ));
        }
        head += header.len();
        if head > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "connection" if value.eq_ignore_ascii_case("close") => keep_alive = false,
                "connection" if value.eq_ignore_ascii_case("keep-alive") => keep_alive = true,
                "content-length" => content_length = value.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    io::copy(&mut reader.take(content_length as u64), &mut io::sink())?;
    Ok(Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        keep_alive,
    }))
}

/// Writes a complete response with a body.
pub fn write_response<W: Write>(
    out: &mut W,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    // One write: `write!` on a socket sends each formatted piece on its own,
    // and Nagle's algorithm then holds the last one for the peer's delayed
    // ACK (40 ms per keep-alive request).
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    out.write_all(&response)?;
    out.flush()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` on a fresh connection (`Connection: close`).
pub fn get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: `write!` sends each formatted piece on its own, and
    // Nagle's algorithm holds the later ones for the server's delayed ACK.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: shoal-toolbox\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    BufReader::new(stream).read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("head is not UTF-8"))?;
    let status_line = head.lines().next().ok_or_else(|| bad("empty response"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let content_length = head.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let mut body = &raw[split + 4..];
    if let Some(len) = content_length {
        if body.len() < len {
            return Err(bad("body shorter than Content-Length"));
        }
        body = &body[..len];
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keep_alive_and_close() {
        let mut input = io::Cursor::new(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n"
                .to_vec(),
        );
        let first = read_request(&mut input).unwrap().unwrap();
        assert_eq!(
            first,
            Request {
                method: "GET".into(),
                path: "/a".into(),
                keep_alive: true
            }
        );
        let second = read_request(&mut input).unwrap().unwrap();
        assert!(!second.keep_alive);
        assert!(read_request(&mut input).unwrap().is_none());
    }

    #[test]
    fn skips_request_bodies() {
        let mut input = io::Cursor::new(
            b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.0\r\n\r\n".to_vec(),
        );
        assert_eq!(read_request(&mut input).unwrap().unwrap().path, "/x");
        let next = read_request(&mut input).unwrap().unwrap();
        assert_eq!(next.path, "/y");
        assert!(!next.keep_alive, "HTTP/1.0 closes by default");
    }

    #[test]
    fn rejects_garbage() {
        assert!(read_request(&mut io::Cursor::new(b"\x00\x01\r\n".to_vec())).is_err());
        assert!(read_request(&mut io::Cursor::new(b"GET / HTTP/1.1\r\nHost".to_vec())).is_err());
    }

    #[test]
    fn parses_responses() {
        let mut raw = Vec::new();
        write_response(&mut raw, 503, "text/plain", b"unhealthy\n", false).unwrap();
        let response = parse_response(&raw).unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.body, "unhealthy\n");
    }
}
