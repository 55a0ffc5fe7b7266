//! Per-client limits shared by the DICOM and HTTP ports: how many
//! associations or requests one client address may have open at once, so
//! a flood from one host cannot take every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open slots per client address, up to a maximum each.
#[derive(Debug)]
pub struct PerClient {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// One slot of [`PerClient`], given back on drop.
#[derive(Debug)]
pub struct ClientSlot(Arc<PerClient>, IpAddr);

impl PerClient {
    pub fn new(max: usize) -> Self {
        PerClient {
            open: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// A slot for `ip`, or `None` when it has `max` open already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_address_and_given_back() {
        let limits = Arc::new(PerClient::new(2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = limits.take(a).expect("first");
        let _second = limits.take(a).expect("second");
        assert!(limits.take(a).is_none(), "third from one address");
        assert!(limits.take(b).is_some(), "another address is not affected");
        drop(first);
        assert!(limits.take(a).is_some(), "a slot came back");
    }
}
