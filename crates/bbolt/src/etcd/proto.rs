//! The protobuf records etcd keeps in its buckets, encoded by hand (a handful of fields; no
//! code generator). Encoding is what etcd's gogoproto `Marshal` produces, byte for byte:
//! fields in number order, proto3 zero values and empty bytes left out, negative int64s as
//! 10-byte varints, a present sub-message written even when empty. Decoding accepts any
//! valid encoding, skips unknown fields and refuses truncated or malformed input.
//!
//! | message | fields |
//! |---|---|
//! | `mvccpb.KeyValue` | key 1 bytes, create_revision 2 int64, mod_revision 3 int64, version 4 int64, value 5 bytes, lease 6 int64 |
//! | `leasepb.Lease` | ID 1 int64, TTL 2 int64, RemainingTTL 3 int64 |
//! | `authpb.User` | name 1 bytes, password 2 bytes, roles 3 repeated string, options 4 `UserAddOptions{no_password 1 bool}` |
//! | `authpb.Role` | name 1 bytes, keyPermission 2 repeated `Permission` |
//! | `authpb.Permission` | permType 1 enum (READ 0, WRITE 1, READWRITE 2), key 2 bytes, range_end 3 bytes |
//! | `etcdserverpb.AlarmMember` | memberID 1 uint64, alarm 2 enum (NONE 0, NOSPACE 1, CORRUPT 2) |

use crate::error::DecodeError;

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_BYTES: u8 = 2;
const WIRE_FIXED32: u8 = 5;
const VARINT_BYTES_MAX: usize = 10;

/// `mvccpb.KeyValue`: one revision of a key, the value of a `key` bucket entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

/// `leasepb.Lease`, the value of a `lease` bucket entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
    pub remaining_ttl: i64,
}

/// `authpb.UserAddOptions`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserOptions {
    pub no_password: bool,
}

/// `authpb.User`. `options` is `Some` when etcd stored the message (etcdctl 3.4 always sends
/// it), so re-encoding gives the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: Vec<u8>,
    pub password: Vec<u8>,
    pub roles: Vec<String>,
    pub options: Option<UserOptions>,
}

/// `authpb.Permission.Type`.
pub const PERM_READ: i32 = 0;
pub const PERM_WRITE: i32 = 1;
pub const PERM_READWRITE: i32 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permission {
    pub perm_type: i32,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// `authpb.Role`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Role {
    pub name: Vec<u8>,
    pub key_permission: Vec<Permission>,
}

/// `etcdserverpb.AlarmMember`, the key of an `alarm` bucket entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlarmMember {
    pub member_id: u64,
    pub alarm: i32,
}

impl KeyValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.key.len() + self.value.len() + 40);
        put_bytes(&mut out, 1, &self.key);
        put_i64(&mut out, 2, self.create_revision);
        put_i64(&mut out, 3, self.mod_revision);
        put_i64(&mut out, 4, self.version);
        put_bytes(&mut out, 5, &self.value);
        put_i64(&mut out, 6, self.lease);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<KeyValue, DecodeError> {
        let mut kv = KeyValue::default();
        let mut fields = Fields::new(buf, "mvccpb.KeyValue");
        while let Some((field, value)) = fields.next_field()? {
            match field {
                1 => kv.key = value.bytes(fields.message, field)?.to_vec(),
                2 => kv.create_revision = value.varint(fields.message, field)? as i64,
                3 => kv.mod_revision = value.varint(fields.message, field)? as i64,
                4 => kv.version = value.varint(fields.message, field)? as i64,
                5 => kv.value = value.bytes(fields.message, field)?.to_vec(),
                6 => kv.lease = value.varint(fields.message, field)? as i64,
                _ => {}
            }
        }
        Ok(kv)
    }
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(33);
        put_i64(&mut out, 1, self.id);
        put_i64(&mut out, 2, self.ttl);
        put_i64(&mut out, 3, self.remaining_ttl);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Lease, DecodeError> {
        let mut lease = Lease::default();
        let mut fields = Fields::new(buf, "leasepb.Lease");
        while let Some((field, value)) = fields.next_field()? {
            match field {
                1 => lease.id = value.varint(fields.message, field)? as i64,
                2 => lease.ttl = value.varint(fields.message, field)? as i64,
                3 => lease.remaining_ttl = value.varint(fields.message, field)? as i64,
                _ => {}
            }
        }
        Ok(lease)
    }
}

impl User {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, &self.name);
        put_bytes(&mut out, 2, &self.password);
        for role in &self.roles {
            put_len_delimited(&mut out, 3, role.as_bytes());
        }
        if let Some(options) = self.options {
            let mut inner = Vec::new();
            put_u64(&mut inner, 1, u64::from(options.no_password));
            put_len_delimited(&mut out, 4, &inner);
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<User, DecodeError> {
        let mut user = User::default();
        let mut fields = Fields::new(buf, "authpb.User");
        while let Some((field, value)) = fields.next_field()? {
            let message = fields.message;
            match field {
                1 => user.name = value.bytes(message, field)?.to_vec(),
                2 => user.password = value.bytes(message, field)?.to_vec(),
                3 => user.roles.push(value.string(message, field)?),
                4 => user.options = Some(UserOptions::decode(value.bytes(message, field)?)?),
                _ => {}
            }
        }
        Ok(user)
    }
}

impl UserOptions {
    fn decode(buf: &[u8]) -> Result<UserOptions, DecodeError> {
        let mut options = UserOptions::default();
        let mut fields = Fields::new(buf, "authpb.UserAddOptions");
        while let Some((field, value)) = fields.next_field()? {
            if field == 1 {
                options.no_password = value.varint(fields.message, field)? != 0;
            }
        }
        Ok(options)
    }
}

impl Permission {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_i64(&mut out, 1, i64::from(self.perm_type));
        put_bytes(&mut out, 2, &self.key);
        put_bytes(&mut out, 3, &self.range_end);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Permission, DecodeError> {
        let mut perm = Permission::default();
        let mut fields = Fields::new(buf, "authpb.Permission");
        while let Some((field, value)) = fields.next_field()? {
            match field {
                1 => perm.perm_type = value.varint(fields.message, field)? as i32,
                2 => perm.key = value.bytes(fields.message, field)?.to_vec(),
                3 => perm.range_end = value.bytes(fields.message, field)?.to_vec(),
                _ => {}
            }
        }
        Ok(perm)
    }
}

impl Role {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, &self.name);
        for perm in &self.key_permission {
            put_len_delimited(&mut out, 2, &perm.encode());
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Role, DecodeError> {
        let mut role = Role::default();
        let mut fields = Fields::new(buf, "authpb.Role");
        while let Some((field, value)) = fields.next_field()? {
            match field {
                1 => role.name = value.bytes(fields.message, field)?.to_vec(),
                2 => role
                    .key_permission
                    .push(Permission::decode(value.bytes(fields.message, field)?)?),
                _ => {}
            }
        }
        Ok(role)
    }
}

impl AlarmMember {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_u64(&mut out, 1, self.member_id);
        put_i64(&mut out, 2, i64::from(self.alarm));
        out
    }

    pub fn decode(buf: &[u8]) -> Result<AlarmMember, DecodeError> {
        let mut alarm = AlarmMember::default();
        let mut fields = Fields::new(buf, "etcdserverpb.AlarmMember");
        while let Some((field, value)) = fields.next_field()? {
            match field {
                1 => alarm.member_id = value.varint(fields.message, field)?,
                2 => alarm.alarm = value.varint(fields.message, field)? as i32,
                _ => {}
            }
        }
        Ok(alarm)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u64, wire_type: u8) {
    put_varint(out, (field << 3) | u64::from(wire_type));
}

fn put_len_delimited(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    put_tag(out, field, WIRE_BYTES);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// proto3 `bytes`: left out when empty.
fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    if !b.is_empty() {
        put_len_delimited(out, field, b);
    }
}

/// proto3 `int64`/enum: left out when 0; negative values take 10 bytes, as in Go.
fn put_i64(out: &mut Vec<u8>, field: u64, v: i64) {
    put_u64(out, field, v as u64);
}

fn put_u64(out: &mut Vec<u8>, field: u64, v: u64) {
    if v != 0 {
        put_tag(out, field, WIRE_VARINT);
        put_varint(out, v);
    }
}

/// A field's payload as read off the wire.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed,
    Bytes(&'a [u8]),
}

impl<'a> Wire<'a> {
    fn varint(self, message: &'static str, field: u64) -> Result<u64, DecodeError> {
        match self {
            Wire::Varint(v) => Ok(v),
            _ => Err(DecodeError::FieldType { message, field }),
        }
    }

    fn bytes(self, message: &'static str, field: u64) -> Result<&'a [u8], DecodeError> {
        match self {
            Wire::Bytes(b) => Ok(b),
            _ => Err(DecodeError::FieldType { message, field }),
        }
    }

    fn string(self, message: &'static str, field: u64) -> Result<String, DecodeError> {
        let b = self.bytes(message, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8 { message, field })
    }
}

/// Walks the fields of one message.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Fields<'a> {
        Fields {
            buf,
            pos: 0,
            message,
        }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..VARINT_BYTES_MAX {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.truncated());
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow {
            message: self.message,
            offset: start,
        })
    }

    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            message: self.message,
            offset: self.pos,
        }
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], DecodeError> {
        let left = (self.buf.len() - self.pos) as u64;
        if len > left {
            return Err(self.truncated());
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn next_field(&mut self) -> Result<Option<(u64, Wire<'a>)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        let wire_type = (tag & 7) as u8;
        let value = match wire_type {
            WIRE_VARINT => Wire::Varint(self.varint()?),
            WIRE_FIXED64 => self.take(8).map(|_| Wire::Fixed)?,
            WIRE_BYTES => {
                let len = self.varint()?;
                Wire::Bytes(self.take(len)?)
            }
            WIRE_FIXED32 => self.take(4).map(|_| Wire::Fixed)?,
            _ => {
                return Err(DecodeError::WireType {
                    message: self.message,
                    field,
                    wire_type,
                })
            }
        };
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_encodes_as_gogoproto_does() {
        let kv = KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 300,
            version: 1,
            value: b"bar".to_vec(),
            lease: 0,
        };
        // 0a 03 'foo' | 10 02 | 18 ac 02 | 20 01 | 2a 03 'bar'
        assert_eq!(
            kv.encode(),
            b"\x0a\x03foo\x10\x02\x18\xac\x02\x20\x01\x2a\x03bar".to_vec()
        );
        assert_eq!(KeyValue::decode(&kv.encode()), Ok(kv));
        let tombstone = KeyValue {
            key: b"gone".to_vec(),
            ..KeyValue::default()
        };
        assert_eq!(tombstone.encode(), b"\x0a\x04gone".to_vec());
    }

    #[test]
    fn negative_int64_takes_ten_bytes() {
        let lease = Lease {
            id: -1,
            ttl: 5,
            remaining_ttl: 0,
        };
        let bytes = lease.encode();
        assert_eq!(bytes.len(), 1 + 10 + 2);
        assert_eq!(Lease::decode(&bytes), Ok(lease));
    }

    #[test]
    fn user_and_role_round_trip_with_empty_options() {
        let user = User {
            name: b"alice".to_vec(),
            password: b"$2a$10$hash".to_vec(),
            roles: vec!["r1".into(), "root".into()],
            options: Some(UserOptions { no_password: false }),
        };
        let bytes = user.encode();
        assert!(
            bytes.ends_with(b"\x22\x00"),
            "empty options kept: {bytes:?}"
        );
        assert_eq!(User::decode(&bytes), Ok(user));
        let role = Role {
            name: b"r1".to_vec(),
            key_permission: vec![Permission {
                perm_type: PERM_READWRITE,
                key: b"foo".to_vec(),
                range_end: b"fop".to_vec(),
            }],
        };
        assert_eq!(Role::decode(&role.encode()), Ok(role));
    }

    #[test]
    fn malformed_input_is_an_error_and_unknown_fields_are_skipped() {
        assert!(matches!(
            KeyValue::decode(b"\x0a\x05ab"),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            KeyValue::decode(b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
            Err(DecodeError::VarintOverflow { .. })
        ));
        assert!(matches!(
            KeyValue::decode(b"\x0b"),
            Err(DecodeError::WireType { .. })
        ));
        assert!(matches!(
            KeyValue::decode(b"\x10\x01\x0a"),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            KeyValue::decode(b"\x12\x01x"),
            Err(DecodeError::FieldType { .. })
        ));
        // field 9 (fixed32) and field 10 (bytes) are unknown: skipped
        let kv = KeyValue::decode(b"\x4d\x01\x02\x03\x04\x52\x01z\x0a\x01k").expect("decodes");
        assert_eq!(kv.key, b"k".to_vec());
    }
}
