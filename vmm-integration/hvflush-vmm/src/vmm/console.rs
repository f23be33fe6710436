//! Guest console (port 0xE9): bytes are collected per vCPU and printed a
//! line at a time, prefixed with the vCPU index.

/// One vCPU's console line buffer (bounded: long lines are split).
#[derive(Default)]
pub(crate) struct Console {
    line: Vec<u8>,
    pub(crate) lines: Vec<String>,
}

const MAX_LINE: usize = 256;
/// Lines kept for the report; older ones are dropped.
const MAX_KEPT_LINES: usize = 64;

impl Console {
    pub(crate) fn push(&mut self, vcpu: usize, byte: u8, echo: bool) {
        if byte != b'\n' {
            self.line.push(byte);
            if self.line.len() < MAX_LINE {
                return;
            }
        }
        self.flush(vcpu, echo);
    }

    pub(crate) fn flush(&mut self, vcpu: usize, echo: bool) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        if echo {
            eprintln!("[vcpu {vcpu}] {text}");
        }
        if self.lines.len() == MAX_KEPT_LINES {
            self.lines.remove(0);
        }
        self.lines.push(text);
    }
}
