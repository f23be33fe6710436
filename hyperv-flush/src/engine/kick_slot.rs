//! Where a backend keeps what other threads need to kick one vCPU (its
//! thread id, its own mapping of the run page): other threads act on it
//! only inside [`KickSlot::with`], and [`KickSlot::clear`] returns only
//! once no such act is in progress, so nothing reaches a vCPU after it
//! unregistered. Model-checked with loom (`tests/loom_kick_slot.rs`).

use super::sync::{Mutex, lock};

/// One vCPU's kick registration.
pub struct KickSlot<T> {
    registered: Mutex<Option<T>>,
}

impl<T> Default for KickSlot<T> {
    fn default() -> Self {
        Self {
            registered: Mutex::new(None),
        }
    }
}

impl<T> KickSlot<T> {
    /// Stores `value` (replacing and dropping any older one).
    pub fn set(&self, value: T) {
        *lock(&self.registered) = Some(value);
    }

    /// Takes the registration out; when this returns, no [`Self::with`]
    /// of another thread is using it and none will.
    pub fn clear(&self) -> Option<T> {
        lock(&self.registered).take()
    }

    /// Runs `act` on the registration, if any, keeping it registered for
    /// the duration (a concurrent [`Self::clear`] waits). `act` must be
    /// short and must not block: a kick is a store and a signal.
    pub fn with<R>(&self, act: impl FnOnce(&T) -> R) -> Option<R> {
        lock(&self.registered).as_ref().map(act)
    }

    /// Whether something is registered.
    pub fn is_set(&self) -> bool {
        lock(&self.registered).is_some()
    }
}
