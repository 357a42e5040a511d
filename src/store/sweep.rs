//! Retention: objects older than `store.max_age` are removed, then, while the total is above
//! `store.max_total_bytes`, the oldest ones. A background task runs the sweep at start (which
//! also sets the object and byte gauges) and every `store.sweep_interval`.
//!
//! The sweep only ever deletes names that parse as object ids directly under the store's
//! prefix, plus (filesystem only) our own staging files (`<id>#<n>`) left by a crash, once
//! they are an hour old. Anything else in the directory or bucket is left alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{ObjectId, ObjectInfo, Store, StoreError};

/// Staging files younger than this may belong to a write in progress.
const STAGING_GRACE: Duration = Duration::from_secs(3600);

/// Why the sweep removed an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Older than `store.max_age`.
    MaxAge,
    /// Among the oldest while the store was above `store.max_total_bytes`.
    MaxTotalBytes,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::MaxAge => "max_age",
            Reason::MaxTotalBytes => "max_total_bytes",
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default)]
pub struct SweepReport {
    /// Objects (ids) seen.
    pub scanned: usize,
    /// Objects removed, with why.
    pub removed: Vec<(ObjectId, Reason)>,
    /// Bytes of the objects removed.
    pub removed_bytes: u64,
    /// What is left.
    pub kept: usize,
    /// Bytes of what is left.
    pub kept_bytes: u64,
    /// Stale staging files removed (filesystem only).
    pub staging_removed: usize,
    /// Deletions that failed (they are tried again next time).
    pub failed: usize,
}

/// The retention decision, without side effects: which objects to remove and why. Age first;
/// then, oldest first, until the rest fits in `max_total_bytes`. Zero turns a limit off.
pub fn plan(
    objects: &[ObjectInfo],
    now: SystemTime,
    max_age: Duration,
    max_total_bytes: u64,
) -> Vec<(usize, Reason)> {
    let mut order: Vec<usize> = (0..objects.len()).collect();
    // Oldest first; ties broken by id so the plan is deterministic.
    order.sort_by(|&a, &b| {
        let (a, b) = (&objects[a], &objects[b]);
        a.last_modified
            .cmp(&b.last_modified)
            .then_with(|| a.id.as_str().cmp(b.id.as_str()))
    });
    let mut remove = Vec::new();
    let mut total: u64 = objects.iter().map(|o| o.size).sum();
    for i in order {
        let o = &objects[i];
        let expired = !max_age.is_zero()
            && now
                .duration_since(o.last_modified)
                .is_ok_and(|age| age > max_age);
        let reason = if expired {
            Reason::MaxAge
        } else if max_total_bytes > 0 && total > max_total_bytes {
            Reason::MaxTotalBytes
        } else {
            continue;
        };
        total -= o.size;
        remove.push((i, reason));
    }
    remove
}

impl Store {
    /// One sweep now.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        self.sweep_at(SystemTime::now()).await
    }

    /// One sweep as if the time were `now` (tests use a time in the future).
    pub async fn sweep_at(&self, now: SystemTime) -> Result<SweepReport, StoreError> {
        let objects = self.list().await?;
        let plan = plan(
            &objects,
            now,
            self.config.max_age,
            self.config.max_total_bytes.0,
        );
        let mut report = SweepReport {
            scanned: objects.len(),
            ..Default::default()
        };
        let mut gone = vec![false; objects.len()];
        for (i, reason) in plan {
            let o = &objects[i];
            // Look again just before deleting: a re-upload of the same image may have
            // rewritten it since the listing, and its fresh URL must keep working.
            match self.head(&o.id).await {
                Ok(Some(now_info)) if now_info.last_modified != o.last_modified => continue,
                Ok(None) => {
                    gone[i] = true;
                    continue;
                }
                Ok(Some(_)) => {}
                Err(_) => {
                    report.failed += 1;
                    continue;
                }
            }
            match self.delete(&o.id).await {
                Ok(()) => {
                    gone[i] = true;
                    report.removed_bytes += o.size;
                    report.removed.push((o.id.clone(), reason));
                    self.metrics
                        .evicted
                        .with_label_values(&[reason.label()])
                        .inc();
                }
                Err(_) => report.failed += 1,
            }
        }
        for (o, gone) in objects.iter().zip(gone) {
            if !gone {
                report.kept += 1;
                report.kept_bytes += o.size;
            }
        }
        report.staging_removed = self.remove_stale_staging(now).await;
        // The listing is the truth: reset the gauges that puts and deletes move in between.
        self.metrics.objects.set(report.kept as i64);
        self.metrics.bytes.set(report.kept_bytes as i64);
        self.metrics.last_sweep.set(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        Ok(report)
    }

    /// Filesystem only: removes our staging files (`<id>#<digits>`) older than an hour, which
    /// only a crash mid-write leaves behind (on an error the write removes its own).
    async fn remove_stale_staging(&self, now: SystemTime) -> usize {
        let Some(dir) = self.fs_dir.clone() else {
            return 0;
        };
        let removed = tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return 0;
            };
            let mut removed = 0;
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let Some((id, n)) = name.split_once('#') else {
                    continue;
                };
                let ours = ObjectId::parse(id).is_some()
                    && !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit());
                let stale = entry
                    .metadata()
                    .ok()
                    .filter(|m| m.is_file())
                    .is_some_and(|m| {
                        m.modified()
                            .ok()
                            .and_then(|t| now.duration_since(t).ok())
                            .is_some_and(|age| age > STAGING_GRACE)
                    });
                if ours && stale && std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
            removed
        })
        .await
        .unwrap_or(0);
        if removed > 0 {
            self.metrics
                .evicted
                .with_label_values(&["staging"])
                .inc_by(removed as u64);
        }
        removed
    }

    /// Runs the sweep now and then every `store.sweep_interval`, until the task is aborted.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(store.config.sweep_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.sweep().await {
                    Ok(r) if !r.removed.is_empty() || r.staging_removed > 0 || r.failed > 0 => {
                        let by_reason = r.removed.iter().fold(HashMap::new(), |mut m, (_, why)| {
                            *m.entry(why.label()).or_insert(0usize) += 1;
                            m
                        });
                        tracing::info!(
                            removed = r.removed.len(),
                            ?by_reason,
                            removed_bytes = r.removed_bytes,
                            kept = r.kept,
                            kept_bytes = r.kept_bytes,
                            staging_removed = r.staging_removed,
                            failed = r.failed,
                            "upload store swept"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "upload store sweep failed"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ImageKind;

    fn object(n: u8, size: u64, age_secs: u64, now: SystemTime) -> ObjectInfo {
        ObjectInfo {
            id: ObjectId::for_bytes(&[n], ImageKind::Png),
            size,
            last_modified: now - Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn age_then_size_oldest_first() {
        let now = SystemTime::now();
        let objects = vec![
            object(0, 100, 10, now),
            object(1, 100, 5000, now),
            object(2, 100, 30, now),
            object(3, 100, 20, now),
        ];
        // Only age: the one older than 1000 s.
        let p = plan(&objects, now, Duration::from_secs(1000), 0);
        assert_eq!(p, vec![(1, Reason::MaxAge)]);
        // Age, then size: 300 left, limit 150 → the oldest of the rest (2) and then 3.
        let p = plan(&objects, now, Duration::from_secs(1000), 150);
        assert_eq!(
            p,
            vec![
                (1, Reason::MaxAge),
                (2, Reason::MaxTotalBytes),
                (3, Reason::MaxTotalBytes)
            ]
        );
        // Both off: nothing.
        assert!(plan(&objects, now, Duration::ZERO, 0).is_empty());
        // Exactly at the limit stays.
        assert!(plan(&objects, now, Duration::ZERO, 400).is_empty());
    }
}
