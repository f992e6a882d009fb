//! What analyze produced and has not published yet, each item with the
//! trace context of the reading that produced it.
//!
//! Items keep their order; the trace headers (`traceparent`, `tracestate`)
//! are those of the consume span of the reading whose arrival closed the
//! window or raised the alert, so the record continues that reading's trace
//! downstream. Items produced without a reading (the idle rule, evictions)
//! or with traces off carry none, and cost one `None` each.

use std::sync::Arc;

use tributary_shared::eventlog::Record;

/// Trace headers shared by everything one reading produced.
pub type TraceHeaders = Arc<[(String, Vec<u8>)]>;

/// Pending items in order, with their trace headers.
#[derive(Clone, Debug)]
pub struct Outbox<T> {
    items: Vec<T>,
    traces: Vec<Option<TraceHeaders>>,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            traces: Vec::new(),
        }
    }
}

impl<T> Outbox<T> {
    /// Append `items`, all produced under `trace` (if any).
    pub fn extend(&mut self, items: impl IntoIterator<Item = T>, trace: Option<&TraceHeaders>) {
        for item in items {
            self.items.push(item);
            self.traces.push(trace.cloned());
        }
    }

    /// The pending items, oldest first.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// How many are pending.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Each item as a record made by `record`, with its trace headers.
    pub fn records(&self, record: impl Fn(&T) -> Record) -> Vec<Record> {
        self.items
            .iter()
            .zip(&self.traces)
            .map(|(item, trace)| {
                let mut r = record(item);
                if let Some(headers) = trace {
                    r.headers.extend(headers.iter().cloned());
                }
                r
            })
            .collect()
    }

    /// Forget the oldest `n` (they were published).
    pub fn drain_front(&mut self, n: usize) {
        self.items.drain(..n.min(self.items.len()));
        self.traces.drain(..n.min(self.traces.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_the_trace_they_were_produced_under_in_order() {
        let trace: TraceHeaders = Arc::from(vec![("traceparent".to_owned(), b"00-ab-cd-01".to_vec())]);
        let mut out = Outbox::default();
        out.extend(["a", "b"], Some(&trace));
        out.extend(["c"], None);
        let records = out.records(|s| Record::new(s.to_string(), Vec::new()));
        let keys: Vec<_> = records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.key).into_owned())
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(records[0].headers, trace.to_vec());
        assert_eq!(records[1].headers, trace.to_vec());
        assert!(records[2].headers.is_empty());

        out.drain_front(2);
        assert_eq!(out.items(), ["c"]);
        assert!(
            out.records(|s| Record::new(s.to_string(), Vec::new()))[0]
                .headers
                .is_empty()
        );
    }
}
