//! Value encodings: plain JSON (the default, readable by the Python package), and
//! MessagePack, each optionally LZ4-compressed above a size threshold.
//!
//! Wire format (DESIGN.md contract 2):
//!
//! | first byte | meaning |
//! | --- | --- |
//! | anything a JSON text can start with | plain UTF-8 JSON, no header |
//! | `0x01` | MessagePack (named fields) follows |
//! | `0x02` | LZ4 block: 4-byte little-endian decoded length, then the compressed inner value (JSON or `0x01` MessagePack) |
//!
//! No JSON text starts with a control byte, so a reader always knows which codec
//! wrote a value, whatever its own configuration: codecs can be changed on a running
//! system without a flush.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

const MSGPACK: u8 = 0x01;
const LZ4: u8 = 0x02;
/// A tagged entry: `0x03`, tag count (1 byte), then per tag a 2-byte little-endian
/// length, the tag, its 8-byte token; then the value as any other codec writes it.
pub(crate) const TAGGED: u8 = 0x03;

/// Wraps an encoded value with its tags' tokens.
pub(crate) fn wrap_tagged(tags: &[String], tokens: &[u64], inner: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(inner.len() + 2 + tags.iter().map(|t| t.len() + 10).sum::<usize>());
    out.push(TAGGED);
    out.push(tags.len().min(tokens.len()).min(255) as u8);
    for (t, tok) in tags.iter().zip(tokens).take(255) {
        out.extend_from_slice(&(t.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(&t.as_bytes()[..t.len().min(u16::MAX as usize)]);
        out.extend_from_slice(&tok.to_le_bytes());
    }
    out.extend_from_slice(inner);
    out
}

/// The `(tag, token)` stamps of a tagged entry and its inner value.
pub(crate) type Tagged<'a> = (Vec<(String, u64)>, &'a [u8]);

/// Splits a tagged entry into its `(tag, token)` stamps and the inner value;
/// `Ok(None)` for an untagged value; `Err` for a truncated envelope.
pub(crate) fn unwrap_tagged(bytes: &[u8]) -> std::result::Result<Option<Tagged<'_>>, String> {
    if bytes.first() != Some(&TAGGED) {
        return Ok(None);
    }
    let n = *bytes.get(1).ok_or("truncated tag header")? as usize;
    let mut at = 2usize;
    let mut stamps = Vec::with_capacity(n);
    for _ in 0..n {
        let len = bytes.get(at..at + 2).ok_or("truncated tag length")?;
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        at += 2;
        let tag = bytes.get(at..at + len).ok_or("truncated tag")?;
        let tag = std::str::from_utf8(tag)
            .map_err(|_| "tag is not UTF-8")?
            .to_owned();
        at += len;
        let tok = bytes.get(at..at + 8).ok_or("truncated tag token")?;
        let mut b = [0u8; 8];
        b.copy_from_slice(tok);
        at += 8;
        stamps.push((tag, u64::from_le_bytes(b)));
    }
    Ok(Some((stamps, &bytes[at..])))
}

/// How values are serialized.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// Plain UTF-8 JSON with no header: the layout the Python package's JSON
    /// serializer uses, so both can share one Redis.
    #[default]
    Json,
    /// MessagePack with named fields behind a one-byte header: smaller and faster to
    /// decode than JSON.
    MessagePack,
}

/// Optional compression of encoded values.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Store encoded bytes as they are.
    #[default]
    None,
    /// LZ4-compress values whose encoding is at least `min_bytes` long (and only when
    /// that makes them smaller).
    Lz4 {
        /// Values shorter than this are stored uncompressed.
        min_bytes: usize,
    },
}

/// Default refusal threshold for one value: 8 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 8 * 1024 * 1024;

/// Bounds of the first allocation for an encoded value.
const MIN_ENCODE_HINT: usize = 128;
const MAX_ENCODE_HINT: usize = 16 * 1024;

thread_local! {
    /// The capacity the next value encoded on this thread starts with: the
    /// previous one's length, rounded up to a power of two.
    static ENCODED_LEN: std::cell::Cell<usize> = const { std::cell::Cell::new(MIN_ENCODE_HINT) };
}

/// The complete recipe for turning values into bytes and back: codec, compression and
/// the size limit.
///
/// Decoding detects the format from the first byte, so an `Encoding` reads values
/// written by any other `Encoding`.
///
/// It is public, with [`encode`](Self::encode) and [`decode`](Self::decode), for
/// programs that read or write entries without a cache in between: an operator tool
/// that shows the value behind a key fetched with plain Redis commands, a service in
/// another language sharing the Redis, a migration. It is the wire format of DESIGN
/// contract 2 and changes only with it. [`DistributedCache::encoding`](crate::DistributedCache::encoding)
/// gives a cache's own.
///
/// ```
/// use ormcache::{Codec, Compression, Encoding};
///
/// let msgpack = Encoding::new(Codec::MessagePack).compression(Compression::Lz4 { min_bytes: 64 });
/// let bytes = msgpack.encode(&vec!["row"; 100]).unwrap();
/// assert_eq!(bytes[0], 0x02); // compressed
///
/// // A JSON-configured reader still decodes it.
/// let back: Vec<String> = Encoding::default().decode(&bytes).unwrap();
/// assert_eq!(back.len(), 100);
///
/// // Plain JSON has no header: it is what the Python package writes.
/// assert_eq!(Encoding::default().encode(&serde_json::json!({"id": 1})).unwrap(), br#"{"id":1}"#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    codec: Codec,
    compression: Compression,
    max_value_bytes: usize,
}

impl Default for Encoding {
    fn default() -> Self {
        Self::new(Codec::Json)
    }
}

impl Encoding {
    /// An encoding with the given codec, no compression and the default size limit.
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            compression: Compression::None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }

    /// Sets the compression.
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets the largest value, in stored bytes, accepted on write and on read.
    #[must_use]
    pub fn max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// The codec used for writing.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The size limit.
    pub fn max_bytes(&self) -> usize {
        self.max_value_bytes
    }

    /// Encodes a value.
    ///
    /// # Errors
    /// [`ErrorKind::Encode`] if serialization fails, [`ErrorKind::ValueTooLarge`] if the
    /// stored form exceeds the size limit.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        self.encode_for("encode", None, value)
    }

    /// Decodes bytes written by any codec, including a tagged entry's value (the
    /// tags' validity is the cache's business, not the decoder's).
    ///
    /// # Errors
    /// [`ErrorKind::Decode`] for garbage, truncated or wrong-type bytes,
    /// [`ErrorKind::ValueTooLarge`] for values over the limit.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        self.decode_for("decode", None, bytes)
    }

    pub(crate) fn encode_for<T: Serialize + ?Sized>(
        &self,
        op: &'static str,
        key: Option<&str>,
        value: &T,
    ) -> Result<Vec<u8>> {
        let err = |kind: ErrorKind| {
            let e = Error::new(kind, op);
            match key {
                Some(k) => e.with_key(k),
                None => e,
            }
        };
        // Sized like this thread's previous value: rows of one service are alike,
        // and a buffer that regrows copies the value each time.
        let mut plain = Vec::with_capacity(ENCODED_LEN.get());
        match self.codec {
            Codec::Json => serde_json::to_writer(&mut plain, value)
                .map_err(|e| err(ErrorKind::Encode).with_source(e))?,
            Codec::MessagePack => {
                plain.push(MSGPACK);
                rmp_serde::encode::write_named(&mut plain, value)
                    .map_err(|e| err(ErrorKind::Encode).with_source(e))?;
            }
        }
        ENCODED_LEN.set(
            plain
                .len()
                .checked_next_power_of_two()
                .unwrap_or(MAX_ENCODE_HINT)
                .clamp(MIN_ENCODE_HINT, MAX_ENCODE_HINT),
        );
        let stored = match self.compression {
            Compression::Lz4 { min_bytes }
                if plain.len() >= min_bytes && plain.len() <= u32::MAX as usize =>
            {
                let compressed = lz4_flex::block::compress(&plain);
                if compressed.len() + 5 < plain.len() {
                    let mut out = Vec::with_capacity(compressed.len() + 5);
                    out.push(LZ4);
                    out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
                    out.extend_from_slice(&compressed);
                    out
                } else {
                    plain
                }
            }
            _ => plain,
        };
        if stored.len() > self.max_value_bytes {
            return Err(err(ErrorKind::ValueTooLarge).with_detail(format!(
                "{} bytes encoded, max_value_bytes is {}",
                stored.len(),
                self.max_value_bytes
            )));
        }
        Ok(stored)
    }

    pub(crate) fn decode_for<T: DeserializeOwned>(
        &self,
        op: &'static str,
        key: Option<&str>,
        bytes: &[u8],
    ) -> Result<T> {
        let err = |kind: ErrorKind, detail: String| {
            let e = Error::new(kind, op).with_detail(detail);
            match key {
                Some(k) => e.with_key(k),
                None => e,
            }
        };
        if bytes.len() > self.max_value_bytes {
            return Err(err(
                ErrorKind::ValueTooLarge,
                format!(
                    "{} bytes stored, max_value_bytes is {}",
                    bytes.len(),
                    self.max_value_bytes
                ),
            ));
        }
        if bytes.first() == Some(&TAGGED) {
            // The tags' validity is the cache's business; here, the value.
            return match unwrap_tagged(bytes) {
                Ok(Some((_, inner))) if inner.first() != Some(&TAGGED) => {
                    self.decode_for(op, key, inner)
                }
                Ok(_) => Err(err(ErrorKind::Decode, "nested tag envelope".into())),
                Err(e) => Err(err(ErrorKind::Decode, e)),
            };
        }
        match bytes.first() {
            Some(&LZ4) => {
                let Some(len_bytes) = bytes.get(1..5) else {
                    return Err(err(ErrorKind::Decode, "truncated LZ4 header".into()));
                };
                let mut len = [0u8; 4];
                len.copy_from_slice(len_bytes);
                let len = u32::from_le_bytes(len) as usize;
                if len > self.max_value_bytes {
                    return Err(err(
                        ErrorKind::ValueTooLarge,
                        format!(
                            "{len} bytes after decompression, max_value_bytes is {}",
                            self.max_value_bytes
                        ),
                    ));
                }
                let plain = lz4_flex::block::decompress(&bytes[5..], len)
                    .map_err(|e| err(ErrorKind::Decode, format!("corrupt LZ4 block: {e}")))?;
                // The size is a promise of the writer: a block that decodes to
                // fewer bytes is truncated or corrupt, whatever they parse as.
                if plain.len() != len {
                    return Err(err(
                        ErrorKind::Decode,
                        format!(
                            "corrupt LZ4 block: {} bytes decoded, the header says {len}",
                            plain.len()
                        ),
                    ));
                }
                if plain.first() == Some(&LZ4) {
                    return Err(err(ErrorKind::Decode, "nested compression".into()));
                }
                self.decode_plain(&plain)
                    .map_err(|d| err(ErrorKind::Decode, d))
            }
            _ => self
                .decode_plain(bytes)
                .map_err(|d| err(ErrorKind::Decode, d)),
        }
    }

    fn decode_plain<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        match bytes.first() {
            Some(&MSGPACK) => {
                let mut rest = &bytes[1..];
                let value = {
                    let mut de = rmp_serde::Deserializer::new(&mut rest);
                    T::deserialize(&mut de).map_err(|e| format!("invalid MessagePack: {e}"))?
                };
                if rest.is_empty() {
                    Ok(value)
                } else {
                    Err(format!(
                        "{} trailing bytes after MessagePack value",
                        rest.len()
                    ))
                }
            }
            None => Err("empty value".into()),
            Some(_) => serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        id: u64,
        name: String,
        tags: Vec<String>,
        score: Option<f64>,
    }

    fn row() -> Row {
        Row {
            id: 7,
            name: "Zoë \"quoted\" \n".into(),
            tags: vec!["a".into(); 50],
            score: Some(1.5),
        }
    }

    fn all_encodings() -> Vec<Encoding> {
        let mut out = Vec::new();
        for codec in [Codec::Json, Codec::MessagePack] {
            for compression in [
                Compression::None,
                Compression::Lz4 { min_bytes: 0 },
                Compression::Lz4 { min_bytes: 10_000 },
            ] {
                out.push(Encoding::new(codec).compression(compression));
            }
        }
        out
    }

    #[test]
    fn every_encoding_reads_every_other() {
        for writer in all_encodings() {
            let bytes = writer.encode(&row()).unwrap();
            for reader in all_encodings() {
                assert_eq!(
                    reader.decode::<Row>(&bytes).unwrap(),
                    row(),
                    "{writer:?} -> {reader:?}"
                );
            }
        }
    }

    #[test]
    fn json_is_plain_json() {
        let bytes = Encoding::default().encode(&row()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["id"], 7);
    }

    #[test]
    fn headers_never_start_json() {
        // Every byte a JSON text may begin with (RFC 8259 whitespace and value starts).
        for b in b" \t\r\n{[\"-0123456789tfn" {
            assert!(*b != MSGPACK && *b != LZ4 && *b != TAGGED);
        }
    }

    #[test]
    fn garbage_truncated_and_wrong_type_are_decode_errors() {
        let enc = Encoding::default();
        let json = enc.encode(&row()).unwrap();
        let mp = Encoding::new(Codec::MessagePack).encode(&row()).unwrap();
        let lz = Encoding::new(Codec::MessagePack)
            .compression(Compression::Lz4 { min_bytes: 0 })
            .encode(&row())
            .unwrap();
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            b"\xff\xfe garbage".to_vec(),
            json[..json.len() / 2].to_vec(),
            mp[..mp.len() / 2].to_vec(),
            lz[..lz.len() / 2].to_vec(),
            lz[..3].to_vec(),
            vec![LZ4, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3],
            vec![LZ4, 10, 0, 0, 0, 0xff, 0xff],
            b"\"a string, not a row\"".to_vec(),
            [mp.clone(), vec![0xc0]].concat(),
            b"{\"id\":1} trailing".to_vec(),
        ];
        for bytes in cases {
            let err = enc.decode::<Row>(&bytes).unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::Decode | ErrorKind::ValueTooLarge),
                "{bytes:?}: {err}"
            );
        }
    }

    #[test]
    fn lz4_blocks_shorter_than_their_header_are_corrupt() {
        // Found by the `lz4` fuzz target: a block whose one literal is `5`, under a
        // header that promises 16 KiB, read as the number 5.
        let block = [LZ4, 0, 64, 0, 0, 0x10, b'5'];
        let err = Encoding::default().decode::<u32>(&block).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
        // The same block under its true size is fine.
        let honest = [LZ4, 1, 0, 0, 0, 0x10, b'5'];
        assert_eq!(Encoding::default().decode::<u32>(&honest).unwrap(), 5);
    }

    #[test]
    fn size_limit_applies_on_write_and_read() {
        let small = Encoding::default().max_value_bytes(16);
        let err = small.encode(&"x".repeat(100)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
        let big = Encoding::default().encode(&"x".repeat(100)).unwrap();
        assert_eq!(
            small.decode::<String>(&big).unwrap_err().kind(),
            ErrorKind::ValueTooLarge
        );
    }

    #[test]
    fn tag_envelope_round_trips_and_rejects_truncation() {
        let inner = Encoding::default().encode(&row()).unwrap();
        let tags = vec!["users".to_string(), "ünï".to_string()];
        let wrapped = wrap_tagged(&tags, &[7, u64::MAX], &inner);
        let (stamps, rest) = unwrap_tagged(&wrapped).unwrap().unwrap();
        assert_eq!(
            stamps,
            vec![("users".to_string(), 7), ("ünï".to_string(), u64::MAX)]
        );
        assert_eq!(rest, inner.as_slice());
        assert_eq!(Encoding::default().decode::<Row>(&wrapped).unwrap(), row());
        for cut in 1..20 {
            assert!(
                Encoding::default().decode::<Row>(&wrapped[..cut]).is_err(),
                "{cut}"
            );
        }
        assert!(unwrap_tagged(&inner).unwrap().is_none());
    }

    #[test]
    fn compression_only_when_it_pays() {
        let enc = Encoding::new(Codec::Json).compression(Compression::Lz4 { min_bytes: 0 });
        assert_eq!(enc.encode(&1u8).unwrap(), b"1");
        assert_eq!(enc.encode(&"a".repeat(1000)).unwrap()[0], LZ4);
    }
}
