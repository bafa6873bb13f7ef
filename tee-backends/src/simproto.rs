//! The wire protocol between a sim guest and the host's software RMM, over
//! the virtio-serial port named [`SIM_PORT_NAME`].
//!
//! Every message is a frame: a 4-byte little-endian body length, then the
//! body. Requests: `0x01` ‖ challenge (64 B) asks for a CCA token;
//! `0x02` ‖ index (1 B) ‖ data (at most 64 B) extends REM[index]. Responses:
//! `0x00` ‖ payload (the token, or nothing) or `0x01` ‖ UTF-8 error text.
//! One request, one response, in order.

use std::io::{self, Read, Write};

/// The virtio-serial port name the sim channel uses.
pub const SIM_PORT_NAME: &str = "cloister.sim";

/// Largest frame body either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;

/// A request from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimRequest {
    /// A CCA token whose realm challenge is this.
    Token {
        /// The realm challenge (report_data).
        challenge: [u8; 64],
    },
    /// Extend REM[index] with data.
    Extend {
        /// REM index, 0..=3.
        index: u8,
        /// Up to 64 bytes.
        data: Vec<u8>,
    },
}

/// A malformed frame.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Transport failure.
    #[error("sim channel I/O")]
    Io(#[from] io::Error),
    /// Frame too large.
    #[error("sim frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Frame content wrong.
    #[error("malformed sim frame: {0}")]
    Malformed(String),
    /// The host answered with an error.
    #[error("the host's sim RMM refused: {0}")]
    Refused(String),
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> Result<(), ProtoError> {
    let len = u32::try_from(body.len()).map_err(|_| ProtoError::TooLarge(body.len()))?;
    if body.len() > MAX_FRAME {
        return Err(ProtoError::TooLarge(body.len()));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame.
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, ProtoError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

impl SimRequest {
    /// Encodes the request body.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SimRequest::Token { challenge } => {
                let mut b = vec![1u8];
                b.extend_from_slice(challenge);
                b
            }
            SimRequest::Extend { index, data } => {
                let mut b = vec![2u8, *index];
                b.extend_from_slice(data);
                b
            }
        }
    }

    /// Decodes a request body.
    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        match body.split_first() {
            Some((1, rest)) => {
                let challenge: [u8; 64] = rest.try_into().map_err(|_| {
                    ProtoError::Malformed(format!(
                        "token request carries {} bytes of challenge, expected 64",
                        rest.len()
                    ))
                })?;
                Ok(SimRequest::Token { challenge })
            }
            Some((2, rest)) => match rest.split_first() {
                Some((index, data)) if data.len() <= 64 => Ok(SimRequest::Extend {
                    index: *index,
                    data: data.to_vec(),
                }),
                Some((_, data)) => Err(ProtoError::Malformed(format!(
                    "extend request carries {} bytes, at most 64 allowed",
                    data.len()
                ))),
                None => Err(ProtoError::Malformed("extend request without index".into())),
            },
            Some((op, _)) => Err(ProtoError::Malformed(format!(
                "unknown request type {op}: expected 1 (token) or 2 (extend)"
            ))),
            None => Err(ProtoError::Malformed("empty request".into())),
        }
    }
}

/// Encodes a response body.
pub fn encode_response(result: Result<&[u8], &str>) -> Vec<u8> {
    match result {
        Ok(payload) => {
            let mut b = vec![0u8];
            b.extend_from_slice(payload);
            b
        }
        Err(msg) => {
            let mut b = vec![1u8];
            b.extend_from_slice(msg.as_bytes());
            b
        }
    }
}

/// Decodes a response body into the payload or the host's error.
pub fn decode_response(body: &[u8]) -> Result<Vec<u8>, ProtoError> {
    match body.split_first() {
        Some((0, rest)) => Ok(rest.to_vec()),
        Some((1, rest)) => Err(ProtoError::Refused(
            String::from_utf8_lossy(rest).into_owned(),
        )),
        Some((s, _)) => Err(ProtoError::Malformed(format!(
            "unknown response status {s}"
        ))),
        None => Err(ProtoError::Malformed("empty response".into())),
    }
}

/// Sends one request over `stream` and returns the response payload.
pub fn call(stream: &mut (impl Read + Write), req: &SimRequest) -> Result<Vec<u8>, ProtoError> {
    write_frame(stream, &req.encode())?;
    decode_response(&read_frame(stream)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for req in [
            SimRequest::Token { challenge: [9; 64] },
            SimRequest::Extend {
                index: 3,
                data: vec![1, 2, 3],
            },
        ] {
            assert_eq!(SimRequest::decode(&req.encode()).unwrap(), req);
        }
    }

    #[test]
    fn bad_requests_rejected() {
        for (body, needle) in [
            (&[][..], "empty"),
            (&[1, 2, 3][..], "expected 64"),
            (&[2][..], "without index"),
            (&[7][..], "unknown request type 7"),
        ] {
            let e = SimRequest::decode(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let e = SimRequest::decode(
            &[2, 0]
                .iter()
                .chain([0u8; 65].iter())
                .copied()
                .collect::<Vec<_>>(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at most 64"), "{e}");
    }

    #[test]
    fn frames_and_limits() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), b"hello");
        let mut big = (u32::try_from(MAX_FRAME + 1).unwrap())
            .to_le_bytes()
            .to_vec();
        big.extend_from_slice(&[0; 8]);
        assert!(matches!(
            read_frame(&mut big.as_slice()),
            Err(ProtoError::TooLarge(_))
        ));
        assert_eq!(
            decode_response(&encode_response(Ok(b"tok"))).unwrap(),
            b"tok"
        );
        let e = decode_response(&encode_response(Err("no"))).unwrap_err();
        assert!(e.to_string().contains("refused: no"));
    }
}
