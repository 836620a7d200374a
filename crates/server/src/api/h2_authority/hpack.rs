//! An HPACK decoder (RFC 7541) for the `:authority` shim: decodes a header block against the
//! client's dynamic table and hands each field to a callback, without allocating per field.
//!
//! Why our own: the shim decodes every header block of every plaintext HTTP/2 request, and
//! the `loona-hpack` decoder it used built a Huffman decoding table (257 `HashMap`
//! insertions, SipHash) for every Huffman-coded string and then decoded bit by bit through
//! two hash lookups per bit: about 5% of a plaintext member's CPU under a put load, and much
//! of its SipHash. This one decodes Huffman strings through constant tables built at compile
//! time from the code lengths of RFC 7541 Appendix B (the code is canonical: codes of one
//! length are consecutive and follow those of the shorter lengths, in symbol order).
//!
//! Representations (RFC 7541 §6): indexed field (`1xxxxxxx`), literal with incremental
//! indexing (`01xxxxxx`), dynamic table size update (`001xxxxx`), literal without indexing
//! (`0000xxxx`) and never indexed (`0001xxxx`). Indexes 1-61 are the static table (Appendix
//! A), 62 on the dynamic table, newest first. A table size update above the size the server
//! allows, an index past the tables, a bad integer or string, or a field list over the
//! caller's bound is an error: the shim closes the connection.

use std::collections::VecDeque;

/// Why a header block does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HpackError {
    #[error("the header block ends inside a field")]
    Truncated,
    #[error("an integer does not fit")]
    IntegerOverflow,
    #[error("index {0} is in neither table")]
    BadIndex(usize),
    #[error("index 0 is not a field")]
    ZeroIndex,
    #[error("table size update to {0} bytes, above the {1} bytes allowed")]
    TableTooLarge(usize, usize),
    #[error("a Huffman-coded string holds the end-of-string symbol")]
    HuffmanEos,
    #[error("a Huffman-coded string has bad padding")]
    HuffmanPadding,
    #[error("a field is longer than {0} bytes")]
    FieldTooLarge(usize),
}

/// RFC 7541 §4.1: a field's size in the table is its name and value plus 32.
const ENTRY_OVERHEAD_BYTES: usize = 32;

/// The decoder's state: the client's dynamic table, mirrored.
pub struct Decoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    table_bytes: usize,
    /// The size the client set last (at most `allowed_bytes`).
    size_max_bytes: usize,
    /// SETTINGS_HEADER_TABLE_SIZE as the server announced it.
    allowed_bytes: usize,
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl Decoder {
    /// A decoder for a client that may use a dynamic table of at most `allowed_bytes`.
    pub fn new(allowed_bytes: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            table_bytes: 0,
            size_max_bytes: allowed_bytes,
            allowed_bytes,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// Decodes one whole header block, calling `field(name, value)` for each field in order.
    /// A string longer than `string_bytes_max` is an error before it is decoded.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        string_bytes_max: usize,
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                let index = integer(&mut block, 7)?;
                let (name, value) = self.get(index)?;
                field(name, value);
            } else if first & 0x40 != 0 {
                self.literal(&mut block, 6, string_bytes_max)?;
                field(&self.name_buf, &self.value_buf);
                self.insert(self.name_buf.clone(), self.value_buf.clone());
            } else if first & 0x20 != 0 {
                let size = integer(&mut block, 5)?;
                if size > self.allowed_bytes {
                    return Err(HpackError::TableTooLarge(size, self.allowed_bytes));
                }
                self.size_max_bytes = size;
                self.evict_to(size);
            } else {
                // Without indexing (0000) and never indexed (0001) decode alike here.
                self.literal(&mut block, 4, string_bytes_max)?;
                field(&self.name_buf, &self.value_buf);
            }
        }
        Ok(())
    }

    /// A literal field: the name by index (non-zero prefix) or as a string, then the value;
    /// both land in `name_buf` and `value_buf`.
    fn literal(
        &mut self,
        block: &mut &[u8],
        prefix_bits: u32,
        string_bytes_max: usize,
    ) -> Result<(), HpackError> {
        let index = integer(block, prefix_bits)?;
        let mut name = std::mem::take(&mut self.name_buf);
        name.clear();
        let named = if index == 0 {
            string(block, string_bytes_max, &mut name)
        } else {
            self.get(index).map(|(n, _)| name.extend_from_slice(n))
        };
        self.name_buf = name;
        named?;
        self.value_buf.clear();
        string(block, string_bytes_max, &mut self.value_buf)
    }

    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::ZeroIndex),
            1..=STATIC_ENTRIES => {
                let (n, v) = STATIC_TABLE[index - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            _ => self
                .table
                .get(index - STATIC_ENTRIES - 1)
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .ok_or(HpackError::BadIndex(index)),
        }
    }

    /// Adds a field at the front of the dynamic table, evicting the oldest (§4.4: a field
    /// larger than the whole table empties it and is not added).
    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD_BYTES;
        if size > self.size_max_bytes {
            self.evict_to(0);
            return;
        }
        self.evict_to(self.size_max_bytes - size);
        self.table_bytes += size;
        self.table.push_front((name, value));
    }

    fn evict_to(&mut self, bytes: usize) {
        while self.table_bytes > bytes {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.table_bytes -= n.len() + v.len() + ENTRY_OVERHEAD_BYTES;
        }
    }
}

/// An HPACK integer with an N-bit prefix (§5.1); consumes it from `block`.
fn integer(block: &mut &[u8], prefix_bits: u32) -> Result<usize, HpackError> {
    let (&first, mut rest) = block.split_first().ok_or(HpackError::Truncated)?;
    let prefix_max = (1usize << prefix_bits) - 1;
    let mut value = usize::from(first) & prefix_max;
    if value == prefix_max {
        let mut shift = 0u32;
        loop {
            let (&b, tail) = rest.split_first().ok_or(HpackError::Truncated)?;
            rest = tail;
            // Four continuation bytes hold 28 bits: more than any bound here.
            if shift > 21 {
                return Err(HpackError::IntegerOverflow);
            }
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    *block = rest;
    Ok(value)
}

/// A string literal (§5.2), Huffman-coded or not, appended to `out`.
fn string(block: &mut &[u8], bytes_max: usize, out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huffman = block.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, 7)?;
    if len > bytes_max {
        return Err(HpackError::FieldTooLarge(bytes_max));
    }
    if block.len() < len {
        return Err(HpackError::Truncated);
    }
    let (raw, rest) = block.split_at(len);
    *block = rest;
    if huffman {
        huffman_decode(raw, out)
    } else {
        out.extend_from_slice(raw);
        Ok(())
    }
}

/// The Huffman code's length in bits for each symbol 0-255 and EOS (256), RFC 7541
/// Appendix B. The code is canonical, so these lengths define it.
#[rustfmt::skip]
const CODE_BITS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5,
    6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6,
    7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23,
    23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22,
    22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22,
    23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27,
    27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25,
    24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];
const CODE_BITS_MAX: usize = 30;
const EOS: u16 = 256;

/// The canonical code as decoding tables: for each length, the first code of that length,
/// how many codes have it, and where their symbols start in `symbols` (ordered by length,
/// then symbol).
struct Canonical {
    first_code: [u32; CODE_BITS_MAX + 1],
    count: [u32; CODE_BITS_MAX + 1],
    start: [u16; CODE_BITS_MAX + 1],
    symbols: [u16; 257],
}

const fn canonical() -> Canonical {
    let mut c = Canonical {
        first_code: [0; CODE_BITS_MAX + 1],
        count: [0; CODE_BITS_MAX + 1],
        start: [0; CODE_BITS_MAX + 1],
        symbols: [0; 257],
    };
    let mut s = 0;
    while s < 257 {
        c.count[CODE_BITS[s] as usize] += 1;
        s += 1;
    }
    let (mut code, mut next) = (0u32, 0u16);
    let mut len = 1;
    while len <= CODE_BITS_MAX {
        code <<= 1;
        c.first_code[len] = code;
        c.start[len] = next;
        code += c.count[len];
        let mut s = 0;
        while s < 257 {
            if CODE_BITS[s] as usize == len {
                c.symbols[next as usize] = s as u16;
                next += 1;
            }
            s += 1;
        }
        len += 1;
    }
    c
}

const HUFFMAN: Canonical = canonical();

/// Decodes a Huffman-coded string (§5.2) into `out`. The padding must be fewer than 8 bits,
/// all ones (a prefix of EOS); EOS itself must not appear.
fn huffman_decode(raw: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let h = &HUFFMAN;
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in raw {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let offset = code.wrapping_sub(h.first_code[len]);
            if offset < h.count[len] {
                let symbol = h.symbols[usize::from(h.start[len]) + offset as usize];
                if symbol == EOS {
                    return Err(HpackError::HuffmanEos);
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            } else if len == CODE_BITS_MAX {
                // Only EOS is 30 bits long and no longer code exists: unreachable for a
                // string whose codes all matched, so this is damage.
                return Err(HpackError::HuffmanPadding);
            }
        }
    }
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError::HuffmanPadding);
    }
    Ok(())
}

const STATIC_ENTRIES: usize = 61;

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); STATIC_ENTRIES] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Huffman-codes `s` with the canonical code built from [`CODE_BITS`].
    fn huffman_encode(s: &[u8]) -> Vec<u8> {
        let h = &HUFFMAN;
        let code_of = |sym: usize| -> (u64, usize) {
            let len = CODE_BITS[sym] as usize;
            let rank = (h.start[len]..h.start[len] + h.count[len] as u16)
                .position(|i| usize::from(h.symbols[usize::from(i)]) == sym)
                .expect("every symbol has a code");
            (u64::from(h.first_code[len]) + rank as u64, len)
        };
        let (mut acc, mut bits, mut out) = (0u64, 0usize, Vec::new());
        for &b in s {
            let (code, len) = code_of(usize::from(b));
            acc = (acc << len) | code;
            bits += len;
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            let pad = 8 - bits;
            out.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
        }
        out
    }

    /// The code built from the lengths is RFC 7541's: `loona-hpack`'s decoder (its own table
    /// of codes) reads what ours encodes, for every byte value and random strings.
    #[test]
    fn huffman_code_is_the_rfcs() {
        let mut samples: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b, b'a', b]).collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200usize {
            samples.push(
                (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect(),
            );
        }
        for s in samples {
            let coded = huffman_encode(&s);
            let theirs = loona_hpack::huffman::HuffmanDecoder::new()
                .decode(&coded)
                .expect("loona decodes");
            assert_eq!(theirs, s);
            let mut ours = Vec::new();
            huffman_decode(&coded, &mut ours).expect("we decode");
            assert_eq!(ours, s);
        }
    }

    #[test]
    fn huffman_errors() {
        let mut out = Vec::new();
        // 'a' is 00011 (5 bits); padding of three zeros is not a prefix of EOS.
        assert_eq!(
            huffman_decode(&[0b0001_1000], &mut out),
            Err(HpackError::HuffmanPadding)
        );
        // A whole byte of ones is padding longer than 7 bits.
        out.clear();
        let mut coded = huffman_encode(b"ab");
        coded.push(0xff);
        assert_eq!(
            huffman_decode(&coded, &mut out),
            Err(HpackError::HuffmanPadding)
        );
        // EOS (30 ones) inside the string.
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xfc], &mut out),
            Err(HpackError::HuffmanEos)
        );
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
        let mut got = Vec::new();
        d.decode(block, 1 << 20, |n, v| got.push((n.to_vec(), v.to_vec())))?;
        Ok(got)
    }

    /// RFC 7541 Appendix C.4: three requests with Huffman coding, sharing the dynamic table.
    #[test]
    fn rfc_c4_requests_with_huffman() {
        let hex = |s: &str| -> Vec<u8> {
            let s: String = s.split_whitespace().collect();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
                .collect()
        };
        let field = |n: &str, v: &str| (n.as_bytes().to_vec(), v.as_bytes().to_vec());
        let mut d = Decoder::new(4096);
        let first = decode_all(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
        assert_eq!(
            first,
            vec![
                field(":method", "GET"),
                field(":scheme", "http"),
                field(":path", "/"),
                field(":authority", "www.example.com"),
            ]
        );
        let second = decode_all(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(second[3], field(":authority", "www.example.com"));
        assert_eq!(second[4], field("cache-control", "no-cache"));
        let third = decode_all(
            &mut d,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        )
        .unwrap();
        assert_eq!(third[1], field(":scheme", "https"));
        assert_eq!(third[2], field(":path", "/index.html"));
        assert_eq!(third[3], field(":authority", "www.example.com"));
        assert_eq!(third[4], field("custom-key", "custom-value"));
        // Table after C.4.3: custom-key, cache-control, :authority (RFC: 164 bytes).
        assert_eq!(d.table.len(), 3);
        assert_eq!(d.table_bytes, 164);
    }

    #[test]
    fn table_bounds_and_errors() {
        let mut d = Decoder::new(100);
        // Size update above what the server allows.
        assert_eq!(
            decode_all(&mut d, &[0x3f, 0xe1, 0x1f]),
            Err(HpackError::TableTooLarge(4096, 100))
        );
        // Index past both tables, index 0, a truncated string, an overlong integer.
        assert_eq!(
            decode_all(&mut d, &[0x80 | 62]),
            Err(HpackError::BadIndex(62))
        );
        assert_eq!(decode_all(&mut d, &[0x80]), Err(HpackError::ZeroIndex));
        assert_eq!(
            decode_all(&mut d, &[0x00, 0x03, b'a']),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            decode_all(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(HpackError::IntegerOverflow)
        );
        // A string over the caller's bound is refused before it is read.
        let mut small = Decoder::new(100);
        let mut got = Vec::new();
        assert_eq!(
            small.decode(
                &[0x00, 0x05, b'a', b'b', b'c', b'd', b'e', 0x00],
                4,
                |n, v| { got.push((n.to_vec(), v.to_vec())) }
            ),
            Err(HpackError::FieldTooLarge(4))
        );
        // Eviction: two 40-byte fields do not both fit in 70 bytes.
        let mut d = Decoder::new(70);
        let lit = |n: u8, v: u8| [0x40, 0x01, n, 0x03, v, v, v];
        decode_all(&mut d, &lit(b'a', b'1')).unwrap();
        decode_all(&mut d, &lit(b'b', b'2')).unwrap();
        assert_eq!(d.table.len(), 1);
        assert_eq!(
            decode_all(&mut d, &[0x80 | 62]).unwrap(),
            vec![(b"b".to_vec(), b"222".to_vec())]
        );
        // A size update to 0 empties the table.
        decode_all(&mut d, &[0x20]).unwrap();
        assert_eq!(
            decode_all(&mut d, &[0x80 | 62]),
            Err(HpackError::BadIndex(62))
        );
    }
}
