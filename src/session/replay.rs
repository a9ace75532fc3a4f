//! A plain read on a replica, kept so that it runs again elsewhere when its server goes away
//! before answering (a replica stopping, crashing). Must never run a request again once the
//! client may have seen any of its answer: only answer frames that say nothing about the rows,
//! still queued and unwritten, are taken back.

use bytes::BytesMut;

use crate::wire::server_tag as tag;

/// The request's frames, and how much of its answer is queued for the client.
pub(super) struct Replay {
    /// The client's frames of the request, to send again.
    pub(super) frames: Vec<BytesMut>,
    /// Bytes of answer frames queued for the client since the request began: all of them
    /// headers (ParseComplete, BindComplete, ParameterDescription, RowDescription, NoData),
    /// which the request's run elsewhere sends again. Everything queued for the client since
    /// the first of them is counted here, so they are the last `queued` bytes of its output
    /// for as long as that output is at least that long (nothing of them written yet).
    queued: usize,
}

impl Replay {
    pub(super) fn new() -> Replay {
        Replay {
            frames: Vec::new(),
            queued: 0,
        }
    }

    /// `len` bytes of a frame tagged `tag` are queued for the client: `false` when the request
    /// can no longer run again (the frame tells the client something a second run may not
    /// repeat exactly: rows, a command's end, an error, a notice).
    pub(super) fn answer_queued(&mut self, tag: u8, len: usize) -> bool {
        let header = matches!(
            tag,
            tag::PARSE_COMPLETE
                | tag::BIND_COMPLETE
                | tag::PARAMETER_DESCRIPTION
                | tag::ROW_DESCRIPTION
                | tag::NO_DATA
        );
        self.queued += len;
        header
    }

    /// Whether none of the answer queued so far has been written from the client's `output`.
    pub(super) fn unsent(&self, output: &BytesMut) -> bool {
        output.len() >= self.queued
    }

    /// Takes the answer queued so far back out of the client's `output` and gives the frames
    /// to send again, so the run elsewhere answers afresh; `None` (and `output` untouched)
    /// when part of that answer was written already.
    pub(super) fn take_back(self, output: &mut BytesMut) -> Option<Vec<BytesMut>> {
        let keep = output.len().checked_sub(self.queued)?;
        output.truncate(keep);
        Some(self.frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_still_queued_are_taken_back_and_nothing_else() {
        let mut output = BytesMut::from(&b"earlier"[..]);
        let mut replay = Replay::new();
        for (t, bytes) in [
            (tag::PARSE_COMPLETE, &b"1...."[..]),
            (tag::BIND_COMPLETE, b"2...."),
        ] {
            output.extend_from_slice(bytes);
            assert!(replay.answer_queued(t, bytes.len()));
        }
        assert!(replay.unsent(&output));
        assert!(replay.take_back(&mut output).is_some());
        assert_eq!(&output[..], b"earlier", "only the answer's headers went");
    }

    #[test]
    fn an_answer_partly_written_is_not_taken_back() {
        let mut replay = Replay::new();
        assert!(replay.answer_queued(tag::BIND_COMPLETE, 5));
        // The client's output was written since: 3 bytes of the 5 are left.
        let mut output = BytesMut::from(&b"..."[..]);
        assert!(!replay.unsent(&output));
        assert!(replay.take_back(&mut output).is_none());
        assert_eq!(&output[..], b"...");
    }

    #[test]
    fn rows_end_the_chance_to_run_again() {
        let mut replay = Replay::new();
        assert!(replay.answer_queued(tag::ROW_DESCRIPTION, 20));
        assert!(!replay.answer_queued(tag::DATA_ROW, 10));
        assert!(!Replay::new().answer_queued(tag::COMMAND_COMPLETE, 10));
        assert!(!Replay::new().answer_queued(tag::ERROR_RESPONSE, 10));
    }
}
