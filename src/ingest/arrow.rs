//! Lines of KISSmetrics JSON in Arrow batches, and whole CSV files, parsed into ops in Arrow
//! batches (the `parquet` feature): the importer's own reading of a line ([`parse_raw_line`])
//! and of a CSV file ([`Records`]) for engines that hold the input themselves, such as the
//! Python package's `parse_lines` and `parse_csv` and the Spark job's executors.
//!
//! In: a batch with columns `file` (text: the name errors give), `line` (an integer: the line
//! number, from 1) and `text` (the line's bytes, with or without its line ending; binary or
//! text). Out: the ops of the good lines and the bad lines, each a batch:
//!
//! | batch | columns |
//! |---|---|
//! | ops | `file`, `line`, `op` (the op's place in its line, from 0), `kind` (`alias`, `record` or `set`), `a` (the ID; an alias's first), `b` (an alias's second ID), `at` (Unix s), `cause` (an alias's), `event` (a record's name), `event_folded` (its case-folded form: the store compares names so), `properties` (a record's or set's, a JSON object as text, names sorted), `property_list` (the same, one entry per property in the line's order: `name`, `folded`, `name_json`, `value_json`), `blocked` (an alias's endpoint on the blocked-ID list, which refuses it: `a` checked first; none for an alias of an ID to itself) |
//! | rejected | `file`, `line`, `error` (`FILE:LINE: reason`, as `idgraph import` says it), `reason` (the reason alone) |
//!
//! Blank lines give neither.

use std::sync::Arc;

use arrow_array::builder::{Int32Builder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, Schema};

use super::csv::{Records, Stop};
use super::km_json::parse_raw_line;
use crate::error::{Error, Result};
use crate::id::{BlockedIds, DEFAULT_BLOCKED_IDS};
use crate::op::{Op, Properties, Timestamp, fold_case};

/// The fields of one entry of `property_list`.
fn property_fields() -> Fields {
    ["name", "folded", "name_json", "value_json"]
        .into_iter()
        .map(|n| Field::new(n, DataType::Utf8, false))
        .collect()
}

/// The columns of the ops `parse_lines` returns.
pub fn ops_schema() -> Arc<Schema> {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("file", false),
        Field::new("line", DataType::Int64, false),
        Field::new("op", DataType::Int32, false),
        text("kind", false),
        text("a", false),
        text("b", true),
        Field::new("at", DataType::Int64, false),
        text("cause", true),
        text("event", true),
        text("event_folded", true),
        text("properties", true),
        Field::new(
            "property_list",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(property_fields()),
                false,
            ))),
            true,
        ),
        text("blocked", true),
    ]))
}

/// The columns of the lines `parse_lines` rejects.
pub fn rejected_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ]))
}

/// The entries of `property_list`, filled then taken as a list column.
struct PropertyList {
    offsets: Vec<i32>,
    valid: Vec<bool>,
    name: StringBuilder,
    folded: StringBuilder,
    name_json: StringBuilder,
    value_json: StringBuilder,
    buf: Vec<u8>,
}

impl PropertyList {
    fn with_capacity(rows: usize) -> Self {
        let text = |per: usize| StringBuilder::with_capacity(rows * 4, rows * 4 * per);
        PropertyList {
            offsets: Vec::from([0]),
            valid: Vec::with_capacity(rows),
            name: text(8),
            folded: text(8),
            name_json: text(10),
            value_json: text(10),
            buf: Vec::with_capacity(256),
        }
    }

    fn json(buf: &mut Vec<u8>, to: &mut StringBuilder, v: &impl serde::Serialize) {
        buf.clear();
        serde_json::to_writer(&mut *buf, v).expect("writing to memory");
        to.append_value(std::str::from_utf8(buf).expect("JSON is UTF-8"));
    }

    fn push(&mut self, p: Option<&Properties>) {
        let Some(p) = p else {
            self.valid.push(false);
            self.offsets.push(*self.offsets.last().expect("one offset"));
            return;
        };
        for (k, v) in p.iter() {
            self.name.append_value(k);
            self.folded.append_value(fold_case(k));
            Self::json(&mut self.buf, &mut self.name_json, &k);
            Self::json(&mut self.buf, &mut self.value_json, v);
        }
        let end = self.offsets.last().expect("one offset") + p.len() as i32;
        self.offsets.push(end);
        self.valid.push(true);
    }

    fn finish(mut self) -> Result<ArrayRef> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.name.finish()),
            Arc::new(self.folded.finish()),
            Arc::new(self.name_json.finish()),
            Arc::new(self.value_json.finish()),
        ];
        let entries = StructArray::try_new(property_fields(), cols, None).map_err(internal)?;
        let item = Arc::new(Field::new(
            "item",
            DataType::Struct(property_fields()),
            false,
        ));
        let list = ListArray::try_new(
            item,
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(entries),
            Some(NullBuffer::from(self.valid)),
        )
        .map_err(internal)?;
        Ok(Arc::new(list))
    }
}

struct OpRows {
    file: StringBuilder,
    line: Int64Builder,
    op: Int32Builder,
    kind: StringBuilder,
    a: StringBuilder,
    b: StringBuilder,
    at: Int64Builder,
    cause: StringBuilder,
    event: StringBuilder,
    event_folded: StringBuilder,
    properties: StringBuilder,
    property_list: PropertyList,
    blocked: StringBuilder,
    /// One op's properties as JSON, reused.
    json: Vec<u8>,
}

impl OpRows {
    /// Room for about `rows` ops of lines of `bytes` bytes in all (most ops are one line's,
    /// and carry most of its bytes as properties).
    fn with_capacity(rows: usize, bytes: usize) -> Self {
        let text = |per_row: usize| StringBuilder::with_capacity(rows, rows * per_row);
        OpRows {
            file: text(16),
            line: Int64Builder::with_capacity(rows),
            op: Int32Builder::with_capacity(rows),
            kind: text(6),
            a: text(24),
            b: text(4),
            at: Int64Builder::with_capacity(rows),
            cause: text(2),
            event: text(12),
            event_folded: text(12),
            properties: StringBuilder::with_capacity(rows, bytes),
            property_list: PropertyList::with_capacity(rows),
            blocked: text(0),
            json: Vec::with_capacity(1024),
        }
    }

    fn properties(&mut self, p: &Properties) {
        self.property_list.push(Some(p));
        self.json.clear();
        p.write_json(&mut self.json);
        self.properties
            .append_value(std::str::from_utf8(&self.json).expect("JSON is UTF-8"));
    }

    fn push(&mut self, file: &str, line: i64, n: i32, op: &Op, blocked: &BlockedIds) {
        self.file.append_value(file);
        self.line.append_value(line);
        self.op.append_value(n);
        match op {
            Op::Alias {
                a, b, at, cause, ..
            } => {
                self.kind.append_value("alias");
                self.a.append_value(a.as_str());
                self.b.append_value(b.as_str());
                self.at.append_value(*at);
                self.cause.append_value(cause.as_str());
                self.event.append_null();
                self.event_folded.append_null();
                self.properties.append_null();
                self.property_list.push(None);
                // The store's own rule (its planner asks the same question).
                match blocked.refusing(a, b) {
                    Some(x) => self.blocked.append_value(x.as_str()),
                    None => self.blocked.append_null(),
                }
            }
            Op::Record {
                id,
                event,
                properties,
                at,
            } => {
                self.kind.append_value("record");
                self.a.append_value(id.as_str());
                self.b.append_null();
                self.at.append_value(*at);
                self.cause.append_null();
                self.event.append_value(event);
                self.event_folded.append_value(fold_case(event));
                self.properties(properties);
                self.blocked.append_null();
            }
            Op::Set { id, properties, at } => {
                self.kind.append_value("set");
                self.a.append_value(id.as_str());
                self.b.append_null();
                self.at.append_value(*at);
                self.cause.append_null();
                self.event.append_null();
                self.event_folded.append_null();
                self.properties(properties);
                self.blocked.append_null();
            }
        }
    }

    /// The ops of one line (or record), numbered from 0 in its order.
    fn push_all(&mut self, file: &str, line: i64, ops: &[Op], blocked: &BlockedIds) {
        for (n, op) in ops.iter().enumerate() {
            self.push(file, line, n as i32, op, blocked);
        }
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.file.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.op.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.a.finish()),
            Arc::new(self.b.finish()),
            Arc::new(self.at.finish()),
            Arc::new(self.cause.finish()),
            Arc::new(self.event.finish()),
            Arc::new(self.event_folded.finish()),
            Arc::new(self.properties.finish()),
            self.property_list.finish()?,
            Arc::new(self.blocked.finish()),
        ];
        RecordBatch::try_new(ops_schema(), cols).map_err(internal)
    }
}

fn internal(e: arrow_schema::ArrowError) -> Error {
    Error::Internal(format!("building a record batch: {e}"))
}

/// The column `name` of `batch`, cast to `to`.
fn column(batch: &RecordBatch, name: &str, to: &DataType, what: &str) -> Result<ArrayRef> {
    let Some(c) = batch.column_by_name(name) else {
        let has: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        return Err(Error::Input(format!(
            "parse_lines: the batch has no column `{name}` ({what}); it has {}",
            if has.is_empty() {
                "none".to_string()
            } else {
                has.join(", ")
            }
        )));
    };
    arrow_cast::cast(c, to).map_err(|e| {
        Error::Input(format!(
            "parse_lines: column `{name}` ({what}) is {}, which cannot be read as {to}: {e}",
            c.data_type()
        ))
    })
}

/// Parses every line of `batch` (see the module's docs): the ops of the good lines, in line
/// order, and the bad lines with their errors. `blocked_ids` is the blocked-ID list of the
/// `blocked` column, as [`Config::blocked_ids`](crate::Config::blocked_ids) takes it (`None`:
/// [`DEFAULT_BLOCKED_IDS`]).
///
/// # Errors
/// [`Error::Input`] when a column is missing, of a type that cannot be read as its kind, or
/// null.
pub fn parse_lines(
    batch: &RecordBatch,
    blocked_ids: Option<&[String]>,
) -> Result<(RecordBatch, RecordBatch)> {
    let blocked = blocked_list(blocked_ids);
    let file = column(batch, "file", &DataType::Utf8, "text")?;
    let line = column(batch, "line", &DataType::Int64, "an integer")?;
    let text = column(batch, "text", &DataType::Binary, "bytes or text")?;
    for (name, c) in [("file", &file), ("line", &line), ("text", &text)] {
        if c.null_count() > 0 {
            return Err(Error::Input(format!(
                "parse_lines: column `{name}` has {} nulls",
                c.null_count()
            )));
        }
    }
    let (file, line, text) = (
        file.as_string::<i32>(),
        line.as_primitive::<Int64Type>(),
        text.as_binary::<i32>(),
    );
    let mut ops = OpRows::with_capacity(batch.num_rows(), text.values().len());
    let mut rejected = Rejected::default();
    for i in 0..batch.num_rows() {
        let (f, l) = (file.value(i), line.value(i));
        // No source: the ops' rows carry the file and line (an alias link's source is
        // `FILE:LINE` when the importer reads it).
        match parse_raw_line(text.value(i), None) {
            None => {}
            Some(Ok(parsed)) => ops.push_all(f, l, &parsed, &blocked),
            Some(Err(reason)) => rejected.push(f, l, &reason),
        }
    }
    Ok((ops.finish()?, rejected.finish()?))
}

/// Parses a whole CSV file as `idgraph import` reads one (its header, then each record;
/// [`Records`]): the ops of its good records and its bad records, in the batches and columns
/// of [`parse_lines`] (`line` is the line a record starts on). `file` is the name errors
/// give; `now` the time of an alias row without a timestamp; `blocked_ids` as in
/// [`parse_lines`].
///
/// # Errors
/// [`Error::Input`] (`FILE:LINE: reason`, as the importer stops) when the header is bad or a
/// record is longer than [`MAX_LINE_BYTES`](super::input::MAX_LINE_BYTES): the importer
/// cannot read on, `--skip-invalid` or not.
pub fn parse_csv(
    file: &str,
    data: &[u8],
    now: Timestamp,
    blocked_ids: Option<&[String]>,
) -> Result<(RecordBatch, RecordBatch)> {
    let blocked = blocked_list(blocked_ids);
    let stop = |s: Stop| s.error(file);
    let mut rows = Records::new(file, data, None, 0, now).map_err(stop)?;
    let mut ops = OpRows::with_capacity(data.len() / 64, data.len());
    let mut rejected = Rejected::default();
    while let Some(row) = rows.next_row().map_err(stop)? {
        let line = i64::try_from(row.line).unwrap_or(i64::MAX);
        match row.parsed {
            Ok(parsed) => ops.push_all(file, line, &parsed, &blocked),
            Err(reason) => rejected.push(file, line, &reason),
        }
    }
    Ok((ops.finish()?, rejected.finish()?))
}

/// The blocked-ID list: `ids`, or the store's default.
fn blocked_list(ids: Option<&[String]>) -> BlockedIds {
    match ids {
        Some(ids) => BlockedIds::new(ids),
        None => BlockedIds::new(DEFAULT_BLOCKED_IDS),
    }
}

/// The rejected lines' batch, filled row by row.
#[derive(Default)]
struct Rejected {
    file: StringBuilder,
    line: Int64Builder,
    error: StringBuilder,
    reason: StringBuilder,
}

impl Rejected {
    fn push(&mut self, file: &str, line: i64, reason: &str) {
        self.file.append_value(file);
        self.line.append_value(line);
        self.error.append_value(format!("{file}:{line}: {reason}"));
        self.reason.append_value(reason);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        RecordBatch::try_new(
            rejected_schema(),
            vec![
                Arc::new(self.file.finish()),
                Arc::new(self.line.finish()),
                Arc::new(self.error.finish()),
                Arc::new(self.reason.finish()),
            ],
        )
        .map_err(internal)
    }
}

/// The connected components of a batch of edges `u`, `v` (64-bit integers, no nulls) as star
/// edges [`forest::stars`](crate::forest::stars): `u` the smallest of each component, `v`
/// every other member. How the Spark job solves its links when they fit one task
/// (spark/README.md).
///
/// # Errors
/// [`Error::Input`] when a column is missing, not integers, or null.
pub fn local_stars(batch: &RecordBatch) -> Result<RecordBatch> {
    let u = column(batch, "u", &DataType::Int64, "an integer")?;
    let v = column(batch, "v", &DataType::Int64, "an integer")?;
    for (name, c) in [("u", &u), ("v", &v)] {
        if c.null_count() > 0 {
            return Err(Error::Input(format!(
                "local_stars: column `{name}` has {} nulls",
                c.null_count()
            )));
        }
    }
    let (u, v) = (u.as_primitive::<Int64Type>(), v.as_primitive::<Int64Type>());
    let stars = crate::forest::stars(u.values().iter().copied().zip(v.values().iter().copied()));
    let (mut a, mut b) = (
        Int64Builder::with_capacity(stars.len()),
        Int64Builder::with_capacity(stars.len()),
    );
    for (x, y) in stars {
        a.append_value(x);
        b.append_value(y);
    }
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("u", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ])),
        vec![Arc::new(a.finish()), Arc::new(b.finish())],
    )
    .map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{BinaryArray, Int32Array, StringArray};

    fn batch(lines: &[&[u8]]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "file",
                Arc::new(StringArray::from(vec!["f.json"; lines.len()])) as ArrayRef,
            ),
            (
                "line",
                Arc::new(Int32Array::from_iter_values(1..=lines.len() as i32)) as ArrayRef,
            ),
            (
                "text",
                Arc::new(BinaryArray::from_iter_values(lines.iter().copied())) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn the_ops_and_the_errors_are_the_importers() {
        let lines: &[&[u8]] = &[
            br#"{"_p":"bob","_t":5,"_n":"Signed Up","plan":"pro"}"#,
            b"   \r\n",
            br#"{"_p":"bob","_p2":"anon","_t":"6"}"#,
            br#"{"_p":"bob","_t":5}"#,
            b"{\"_p\":\"\xff\",\"_t\":5}",
            br#"{"_p":"bob","_t":7,"_n":"Paid","_p_original":"card"}"#,
            br#"{"_p":"bob","_t":8,"age":30}"#,
        ];
        let (ops, bad) = parse_lines(&batch(lines), None).unwrap();
        let s = |b: &RecordBatch, c: &str| -> Vec<Option<String>> {
            b.column_by_name(c)
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect()
        };
        let kinds: Vec<_> = s(&ops, "kind").into_iter().flatten().collect();
        assert_eq!(kinds, ["record", "alias", "alias", "record", "set"]);
        let lines: Vec<i64> = ops
            .column_by_name("line")
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        assert_eq!(lines, [1, 3, 6, 6, 7]);
        assert_eq!(s(&ops, "b")[1].as_deref(), Some("anon"));
        assert_eq!(s(&ops, "cause")[1].as_deref(), Some("import"));
        assert_eq!(s(&ops, "a")[3].as_deref(), Some("card"));
        assert_eq!(
            s(&ops, "properties")[0].as_deref(),
            Some(r#"{"plan":"pro"}"#)
        );
        assert_eq!(s(&ops, "properties")[4].as_deref(), Some(r#"{"age":30}"#));
        // The errors are word for word what the importer says of the same lines.
        let want: Vec<String> = lines_errors(&[
            (4, br#"{"_p":"bob","_t":5}"#),
            (5, b"{\"_p\":\"\xff\",\"_t\":5}"),
        ]);
        let got: Vec<String> = s(&bad, "error").into_iter().flatten().collect();
        assert_eq!(got, want);
        assert!(got[1].ends_with("f.json:5: not UTF-8"), "{got:?}");
        assert_eq!(s(&bad, "reason")[1].as_deref(), Some("not UTF-8"));
    }

    #[test]
    fn the_extra_columns_are_the_stores_forms() {
        let lines: &[&[u8]] = &[
            br#"{"_p":"Guest","_p2":"bob","_t":1}"#,
            br#"{"_p":"bob","_p2":"'NULL'","_t":2}"#,
            br#"{"_p":"bob","_t":3,"_n":"Signed UP","Plan":"pro","n":1.5,"plan":"max"}"#,
            br#"{"_p":"bob","_p2":"ann","_t":4}"#,
            br#"{"_p":"guest","_p2":"guest","_t":5}"#,
        ];
        let (ops, _) = parse_lines(&batch(lines), None).unwrap();
        let col = |c: &str| -> Vec<Option<String>> {
            ops.column_by_name(c)
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect()
        };
        let blocked = col("blocked");
        assert_eq!(blocked[0].as_deref(), Some("Guest"));
        assert_eq!(blocked[1].as_deref(), Some("'NULL'"));
        assert_eq!(blocked[2], None);
        assert_eq!(blocked[3], None);
        // An alias of an ID to itself is no merge: nothing to refuse.
        assert_eq!(col("a")[4].as_deref(), Some("guest"));
        assert_eq!(blocked[4], None);
        assert_eq!(col("event_folded")[2].as_deref(), Some("signed up"));
        let list = ops
            .column_by_name("property_list")
            .unwrap()
            .as_list::<i32>();
        assert!(list.is_null(0) && !list.is_null(2));
        let entries = list.value(2);
        let entries = entries.as_struct();
        let f = |c: &str| -> Vec<String> {
            entries
                .column_by_name(c)
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap().to_owned())
                .collect()
        };
        // The line's order; a later spelling of a name replaces the value, keeps the first.
        assert_eq!(f("name"), ["Plan", "n"]);
        assert_eq!(f("folded"), ["plan", "n"]);
        assert_eq!(f("name_json"), [r#""Plan""#, r#""n""#]);
        assert_eq!(f("value_json"), [r#""max""#, "1.5"]);
        // Other blocked IDs, given: the defaults are replaced.
        let (ops, _) = parse_lines(&batch(lines), Some(&["ann".to_string()])).unwrap();
        let blocked = ops.column_by_name("blocked").unwrap().as_string::<i32>();
        assert!(blocked.is_null(0) && blocked.is_null(1));
        assert_eq!(blocked.value(3), "ann");
    }

    #[test]
    fn local_stars_are_the_batchs_components() {
        let batch = RecordBatch::try_from_iter([
            (
                "u",
                Arc::new(arrow_array::Int64Array::from(vec![9, 4, 7, 100])) as ArrayRef,
            ),
            (
                "v",
                Arc::new(arrow_array::Int64Array::from(vec![4, 2, 8, 9])) as ArrayRef,
            ),
        ])
        .unwrap();
        let out = local_stars(&batch).unwrap();
        let col = |c: &str| {
            out.column_by_name(c)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        };
        // {2, 4, 9, 100} and {7, 8}: every member but the smallest, to it, in the order the
        // labels first appear.
        assert_eq!(col("u"), [2, 2, 7, 2]);
        assert_eq!(col("v"), [9, 4, 8, 100]);
        let bad = RecordBatch::try_from_iter([(
            "u",
            Arc::new(arrow_array::Int64Array::from(vec![1])) as ArrayRef,
        )])
        .unwrap();
        assert!(local_stars(&bad).unwrap_err().to_string().contains("`v`"));
    }

    fn lines_errors(lines: &[(i64, &[u8])]) -> Vec<String> {
        lines
            .iter()
            .map(|(n, l)| {
                let at = format!("f.json:{n}");
                let reason = parse_raw_line(l, Some(&at)).unwrap().unwrap_err();
                format!("{at}: {reason}")
            })
            .collect()
    }

    /// An op as comparable text: kind, IDs, time, event, properties.
    fn op_text(
        kind: &str,
        a: &str,
        b: Option<&str>,
        at: i64,
        event: Option<&str>,
        props: Option<&str>,
    ) -> String {
        format!("{kind} {a} {b:?} {at} {event:?} {props:?}")
    }

    /// The ops of a `parse_lines` / `parse_csv` batch as [`op_text`].
    fn batch_ops(ops: &RecordBatch) -> Vec<String> {
        let s = |c: &str| ops.column_by_name(c).unwrap().as_string::<i32>().clone();
        let (kind, a, b, event, props) = (s("kind"), s("a"), s("b"), s("event"), s("properties"));
        let at = ops
            .column_by_name("at")
            .unwrap()
            .as_primitive::<Int64Type>();
        (0..ops.num_rows())
            .map(|i| {
                fn opt(c: &arrow_array::StringArray, i: usize) -> Option<&str> {
                    c.is_valid(i).then(|| c.value(i))
                }
                op_text(
                    kind.value(i),
                    a.value(i),
                    opt(&b, i),
                    at.value(i),
                    opt(&event, i),
                    opt(&props, i),
                )
            })
            .collect()
    }

    /// Every CSV file of the fuzz corpus (hostile and odd files: bad headers, quotes, bad
    /// UTF-8, long fields...): `parse_csv` gives the importer's ops, skips the lines it skips
    /// with its words, and stops where it stops.
    #[test]
    fn parse_csv_judges_the_fuzz_corpus_as_the_importer_does() {
        use crate::ingest::files::{FileSource, Format, Input};
        use crate::source::OpSource;
        use std::cell::RefCell;
        use std::rc::Rc;

        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/csv");
        let dir = tempfile::tempdir().unwrap();
        let (mut files, mut stopped, mut skipped, mut parsed) = (0, 0, 0, 0);
        for entry in std::fs::read_dir(&corpus).unwrap() {
            let mut data = std::fs::read(entry.unwrap().path()).unwrap();
            // The importer reads up to the last newline (a last line without one waits for
            // more): end every file with one, so that both read all of it.
            if !data.ends_with(b"\n") {
                data.push(b'\n');
            }
            let path = dir.path().join("c.csv");
            std::fs::write(&path, &data).unwrap();
            let input = Input {
                path: Some(path),
                name: "c.csv".into(),
                format: Format::Csv,
                size: 0,
                start: 0,
                first_line: 0,
            };
            let skips = Rc::new(RefCell::new(Vec::new()));
            let to = skips.clone();
            let mut src = FileSource::new(vec![input], true, 77)
                .on_skip(move |m| to.borrow_mut().push(m.to_owned()));
            let mut want = Vec::new();
            let read = src.for_each(&mut |op| {
                let (kind, a, b, at, event, props) = match &op {
                    Op::Alias { a, b, at, .. } => ("alias", a, Some(b.as_str()), *at, None, None),
                    Op::Record {
                        id,
                        event,
                        properties,
                        at,
                    } => (
                        "record",
                        id,
                        None,
                        *at,
                        Some(event.as_str()),
                        Some(properties),
                    ),
                    Op::Set { id, properties, at } => {
                        ("set", id, None, *at, None, Some(properties))
                    }
                };
                let props = props.map(|p| {
                    let mut j = Vec::new();
                    p.write_json(&mut j);
                    String::from_utf8(j).unwrap()
                });
                want.push(op_text(kind, a.as_str(), b, at, event, props.as_deref()));
                Ok(())
            });
            files += 1;
            match (read, parse_csv("c.csv", &data, 77, None)) {
                (Err(e), Err(got)) => {
                    stopped += 1;
                    assert_eq!(got.to_string(), e.to_string());
                }
                (Ok(()), Ok((ops, bad))) => {
                    let errors = bad.column(2).as_string::<i32>();
                    let got: Vec<String> = errors.iter().map(|e| e.unwrap().to_owned()).collect();
                    assert_eq!(got, *skips.borrow(), "{data:?}");
                    assert_eq!(batch_ops(&ops), want, "{data:?}");
                    skipped += got.len();
                    parsed += want.len();
                }
                (read, got) => panic!("the importer: {read:?}; parse_csv: {got:?}; {data:?}"),
            }
        }
        // The corpus has each kind of verdict, many times.
        assert!(
            files > 1000 && stopped > 100 && skipped > 100 && parsed > 100,
            "{files} files, {stopped} stopped, {skipped} lines skipped, {parsed} ops"
        );
    }

    #[test]
    fn a_line_past_the_limit_is_refused_with_its_size() {
        let long = vec![b'x'; super::super::input::MAX_LINE_BYTES + 1];
        let (ops, bad) = parse_lines(&batch(&[&long]), None).unwrap();
        assert_eq!(ops.num_rows(), 0);
        let e = bad.column(2).as_string::<i32>().value(0).to_owned();
        let n = super::super::input::MAX_LINE_BYTES + 2;
        assert!(
            e.starts_with(&format!("f.json:1: the line has {n} bytes")),
            "{e}"
        );
    }

    #[test]
    fn a_missing_or_null_column_is_an_input_error() {
        let b = RecordBatch::try_from_iter([(
            "value",
            Arc::new(StringArray::from(vec!["{}"])) as ArrayRef,
        )])
        .unwrap();
        let e = parse_lines(&b, None).unwrap_err().to_string();
        assert!(
            e.contains("no column `file`") && e.contains("it has value"),
            "{e}"
        );
        let b = RecordBatch::try_from_iter([
            (
                "file",
                Arc::new(StringArray::from(vec![Some("f")])) as ArrayRef,
            ),
            (
                "line",
                Arc::new(Int32Array::from(vec![Some(1)])) as ArrayRef,
            ),
            (
                "text",
                Arc::new(StringArray::from(vec![None::<&str>])) as ArrayRef,
            ),
        ])
        .unwrap();
        let e = parse_lines(&b, None).unwrap_err().to_string();
        assert!(e.contains("`text` has 1 nulls"), "{e}");
    }
}
