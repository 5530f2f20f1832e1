//! Captured output of one function: a bounded ring of its instances' stdout and stderr.

use std::collections::VecDeque;
use std::sync::Mutex;

/// A bounded byte ring of one function's guest stdout and stderr; the oldest bytes go first.
pub struct LogBuffer {
    capacity: usize,
    bytes: Mutex<VecDeque<u8>>,
}

impl LogBuffer {
    /// A ring keeping the newest `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, bytes: Mutex::new(VecDeque::new()) }
    }

    /// Appends output, dropping the oldest bytes past the capacity. Never blocks for long.
    pub fn append(&self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.capacity)..];
        let mut bytes = self.bytes.lock().unwrap();
        let overflow = (bytes.len() + data.len()).saturating_sub(self.capacity);
        bytes.drain(..overflow);
        bytes.extend(data);
    }

    /// Everything kept, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_newest_bytes() {
        let buf = LogBuffer::new(8);
        buf.append(b"hello ");
        buf.append(b"world");
        assert_eq!(buf.contents(), b"lo world");
        buf.append(b"0123456789");
        assert_eq!(buf.contents(), b"23456789");
    }
}
