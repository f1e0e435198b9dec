//! A parser for the messages of PostgreSQL's built-in `pgoutput` logical decoding plugin
//! (protocol version 1), as `pg_logical_slot_{get,peek}_binary_changes` return them and as
//! XLogData of a replication stream carries them: one message per row. Only what the realtime feed needs is kept: transaction bounds, relation
//! column names, inserted rows. Pure; refuses truncated input rather than guessing.

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `final_lsn`: the LSN of the transaction's commit record.
    Begin {
        final_lsn: u64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
    },
    /// Column names of a relation, sent before its first row in a session.
    Relation {
        id: u32,
        namespace: String,
        name: String,
        columns: Vec<String>,
    },
    /// A new row; each value in text form, None for NULL (or an unchanged TOASTed value).
    Insert {
        relation: u32,
        values: Vec<Option<String>>,
    },
    /// Updates, deletes, truncates, types, origins, logical messages: not part of the feed.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message ({0})")]
pub struct Malformed(pub &'static str);

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if self.b.len() < n {
            return Err(Malformed(what));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, Malformed> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, Malformed> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, Malformed> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn cstr(&mut self, what: &'static str) -> Result<String, Malformed> {
        let end = self.b.iter().position(|c| *c == 0).ok_or(Malformed(what))?;
        let s = String::from_utf8_lossy(&self.b[..end]).into_owned();
        self.b = &self.b[end + 1..];
        Ok(s)
    }
}

pub fn parse(data: &[u8]) -> Result<Message, Malformed> {
    let mut r = Reader { b: data };
    let kind = r.u8("kind")?;
    Ok(match kind {
        b'B' => {
            let final_lsn = r.u64("begin lsn")?;
            let _ts = r.u64("begin time")?;
            Message::Begin { final_lsn, xid: r.u32("xid")? }
        }
        b'C' => {
            let _flags = r.u8("commit flags")?;
            let commit_lsn = r.u64("commit lsn")?;
            let end_lsn = r.u64("end lsn")?;
            Message::Commit { commit_lsn, end_lsn }
        }
        b'R' => {
            let id = r.u32("relation id")?;
            let namespace = r.cstr("namespace")?;
            let name = r.cstr("relation name")?;
            let _identity = r.u8("replica identity")?;
            let n = r.u16("column count")?;
            let mut columns = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                let _flags = r.u8("column flags")?;
                columns.push(r.cstr("column name")?);
                let _type = r.u32("column type")?;
                let _typmod = r.u32("column typmod")?;
            }
            Message::Relation { id, namespace, name, columns }
        }
        b'I' => {
            let relation = r.u32("relation id")?;
            if r.u8("new tuple")? != b'N' {
                return Err(Malformed("new tuple marker"));
            }
            let n = r.u16("value count")?;
            let mut values = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                values.push(match r.u8("value kind")? {
                    b'n' | b'u' => None,
                    b't' | b'b' => {
                        let len = r.u32("value length")? as usize;
                        Some(String::from_utf8_lossy(r.take(len, "value")?).into_owned())
                    }
                    _ => return Err(Malformed("value kind")),
                });
            }
            Message::Insert { relation, values }
        }
        other => Message::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_relation_insert_commit_round_trip() {
        let mut b = vec![b'B'];
        b.extend(0x1_0000_0010u64.to_be_bytes());
        b.extend(7u64.to_be_bytes());
        b.extend(42u32.to_be_bytes());
        assert_eq!(parse(&b), Ok(Message::Begin { final_lsn: 0x1_0000_0010, xid: 42 }));

        let mut r = vec![b'R'];
        r.extend(16384u32.to_be_bytes());
        r.extend(b"tenant_acme\0events\0d");
        r.extend(2u16.to_be_bytes());
        for col in ["id", "payload"] {
            r.push(1);
            r.extend(col.as_bytes());
            r.push(0);
            r.extend(25u32.to_be_bytes());
            r.extend(u32::MAX.to_be_bytes());
        }
        assert_eq!(
            parse(&r),
            Ok(Message::Relation {
                id: 16384,
                namespace: "tenant_acme".into(),
                name: "events".into(),
                columns: vec!["id".into(), "payload".into()]
            })
        );

        let mut i = vec![b'I'];
        i.extend(16384u32.to_be_bytes());
        i.push(b'N');
        i.extend(2u16.to_be_bytes());
        i.push(b't');
        i.extend(3u32.to_be_bytes());
        i.extend(b"abc");
        i.push(b'n');
        assert_eq!(parse(&i), Ok(Message::Insert { relation: 16384, values: vec![Some("abc".into()), None] }));
        assert!(parse(&i[..i.len() - 3]).is_err(), "truncated input is refused");

        let mut c = vec![b'C', 0];
        c.extend(5u64.to_be_bytes());
        c.extend(9u64.to_be_bytes());
        c.extend(1u64.to_be_bytes());
        assert_eq!(parse(&c), Ok(Message::Commit { commit_lsn: 5, end_lsn: 9 }));
        assert_eq!(parse(b"D"), Ok(Message::Other(b'D')));
        assert!(parse(b"").is_err());
    }
}
