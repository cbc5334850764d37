//! Calendar quotas (`rate_limits.quotas`): at most `limit` requests of a key per day or month,
//! the period ending at midnight in the quota's time zone, counted in Redis (one round trip per
//! quota per request, `quota.lua`). A quota is shared by every route that lists it. The clock is
//! the gateway's (keep instances on NTP): a period's counter is
//! `edgegate:q:{<SHA-256 of quota name and key parts>}:<period>` (`2026-12-03` or `2026-12`),
//! expiring a minute after its period ends.

use super::redis::StoreUnavailable;
use super::KeyInput;
use crate::auth::Identity;
use crate::config::{KeyPart, QuotaPeriod, QuotaSpec};
use crate::fleet::link::RedisLink;
use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use std::sync::Arc;
use std::time::Duration;

/// A counter outlives its period by this much, for instances whose clocks run a little late.
const GRACE_MS: i64 = 60_000;

static X_QUOTA_LIMIT: HeaderName = HeaderName::from_static("x-quota-limit");
static X_QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");
static X_QUOTA_RESET: HeaderName = HeaderName::from_static("x-quota-reset");

/// One quota's state for one key, as a request or `/ratelimit/quota` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaReport {
    /// Index into the quotas.
    pub quota: usize,
    pub allowed: bool,
    pub limit: u64,
    /// Requests counted in this period (this one included when admitted).
    pub used: u64,
    /// `2026-12-03` or `2026-12`.
    pub period: String,
    /// When the period ends.
    pub resets_at: Timestamp,
    /// Seconds from now until then (at least 1).
    pub reset_secs: u64,
}

impl QuotaReport {
    /// Requests left in the period.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

/// A period of a quota: its name and its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub id: String,
    pub ends: Timestamp,
}

/// The period of `per` in `zone` that contains `now`.
pub fn period_at(per: QuotaPeriod, zone: &TimeZone, now: Timestamp) -> Option<Period> {
    let date = now.to_zoned(zone.clone()).date();
    let (id, next) = match per {
        QuotaPeriod::Day => (date.to_string(), date.tomorrow().ok()?),
        QuotaPeriod::Month => {
            let first = date.first_of_month();
            (
                format!("{:04}-{:02}", date.year(), date.month()),
                first.checked_add(1.month()).ok()?,
            )
        }
    };
    // Midnight may not exist (a DST gap): the zone's rules pick the first instant of the day.
    let ends = next.to_zoned(zone.clone()).ok()?.timestamp();
    Some(Period { id, ends })
}

struct Compiled {
    spec: QuotaSpec,
    zone: TimeZone,
}

/// Every quota and the Redis they are counted in.
pub struct Quotas {
    quotas: Vec<Compiled>,
    link: Arc<RedisLink>,
    script: redis::Script,
    timeout: Duration,
}

impl Quotas {
    /// The quotas of `specs` on `link` (time zones were validated at load).
    pub fn new(specs: &[QuotaSpec], link: Arc<RedisLink>, timeout: Duration) -> Self {
        Quotas {
            quotas: specs
                .iter()
                .map(|spec| Compiled {
                    zone: TimeZone::get(&spec.time_zone).unwrap_or(TimeZone::UTC),
                    spec: spec.clone(),
                })
                .collect(),
            link,
            script: redis::Script::new(include_str!("quota.lua")),
            timeout: timeout.max(Duration::from_millis(50)),
        }
    }

    /// The quota at `index`.
    pub fn spec(&self, index: usize) -> Option<&QuotaSpec> {
        self.quotas.get(index).map(|q| &q.spec)
    }

    /// Index of the quota named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.quotas.iter().position(|q| q.spec.name == name)
    }

    /// Counts one request against each of `quotas`; the first that is used up refuses it
    /// (what the others had counted is given back). The answer is the refusing quota's report,
    /// else the one with the fewest requests left.
    pub async fn take(
        &self,
        quotas: &[usize],
        input: &KeyInput<'_>,
    ) -> Result<Option<QuotaReport>, StoreUnavailable> {
        let mut counted: Vec<String> = Vec::new();
        let mut closest: Option<QuotaReport> = None;
        for &index in quotas {
            let (key, report) = match self.call(index, input, Mode::Take).await {
                Ok(answer) => answer,
                Err(unavailable) => {
                    self.give_back(&counted).await;
                    return Err(unavailable);
                }
            };
            if !report.allowed {
                self.give_back(&counted).await;
                return Ok(Some(report));
            }
            counted.push(key);
            if closest
                .as_ref()
                .is_none_or(|c| report.remaining() < c.remaining())
            {
                closest = Some(report);
            }
        }
        Ok(closest)
    }

    /// Where quota `index` stands for the key `input` describes, without counting.
    pub async fn usage(
        &self,
        index: usize,
        input: &KeyInput<'_>,
    ) -> Result<QuotaReport, StoreUnavailable> {
        self.call(index, input, Mode::Read)
            .await
            .map(|(_, report)| report)
    }

    async fn give_back(&self, counted: &[String]) {
        for key in counted {
            // Best effort: a failed refund only costs the client one request of its quota. A
            // refund reads neither the limit nor the expiry.
            let _ = self.run(key, 0, Mode::Refund, 0).await;
        }
    }

    async fn call(
        &self,
        index: usize,
        input: &KeyInput<'_>,
        mode: Mode,
    ) -> Result<(String, QuotaReport), StoreUnavailable> {
        let quota = self.quotas.get(index).ok_or(StoreUnavailable)?;
        let now = Timestamp::now();
        let period = period_at(quota.spec.per, &quota.zone, now).ok_or(StoreUnavailable)?;
        let key = format!(
            "edgegate:q:{{{}}}:{}",
            super::digest_hex(&quota.spec.name, None, &quota.spec.key, input),
            period.id
        );
        let limit = limit_for(&quota.spec, input.identity);
        let (allowed, used) = self
            .run(&key, limit, mode, period.ends.as_millisecond())
            .await?;
        let reset_ms = period.ends.as_millisecond() - now.as_millisecond();
        Ok((
            key,
            QuotaReport {
                quota: index,
                allowed,
                limit,
                used,
                period: period.id,
                resets_at: period.ends,
                reset_secs: (reset_ms.max(1) as u64).div_ceil(1000),
            },
        ))
    }

    async fn run(
        &self,
        key: &str,
        limit: u64,
        mode: Mode,
        ends_ms: i64,
    ) -> Result<(bool, u64), StoreUnavailable> {
        let calling = async {
            let mut connection = self.link.connection().await?;
            let mut call = self.script.key(key);
            call.arg(limit).arg(mode as u8).arg(ends_ms + GRACE_MS);
            call.invoke_async::<(u64, u64)>(&mut connection).await
        };
        match tokio::time::timeout(self.timeout, calling).await {
            Ok(Ok((allowed, used))) => Ok((allowed == 1, used)),
            Ok(Err(error)) => {
                self.link.failed();
                log::debug!("quota store: {error}");
                Err(StoreUnavailable)
            }
            Err(_) => Err(StoreUnavailable),
        }
    }

    /// The quota headers for `report` (and `Retry-After` when it refused).
    pub fn headers(&self, report: &QuotaReport) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = vec![
            (X_QUOTA_LIMIT.clone(), HeaderValue::from(report.limit)),
            (
                X_QUOTA_REMAINING.clone(),
                HeaderValue::from(report.remaining()),
            ),
            (X_QUOTA_RESET.clone(), HeaderValue::from(report.reset_secs)),
        ];
        if !report.allowed {
            headers.push((
                http::header::RETRY_AFTER,
                HeaderValue::from(report.reset_secs.max(1)),
            ));
        }
        headers
    }

    /// Adds the quota headers to a response.
    pub fn write_headers(&self, report: &QuotaReport, headers: &mut HeaderMap) {
        for (name, value) in self.headers(report) {
            let _ = headers.try_insert(name, value);
        }
    }

    /// The request a `/ratelimit/quota?name=...&key=...` lookup stands for: `values` fill the
    /// quota's key parts in order (`global` takes none).
    pub fn lookup_input(
        &self,
        index: usize,
        values: &[String],
    ) -> Result<(Option<Identity>, HeaderMap, Option<std::net::IpAddr>), String> {
        let quota = self.quotas.get(index).ok_or("no such quota")?;
        let parts: Vec<&KeyPart> = quota
            .spec
            .key
            .iter()
            .filter(|p| **p != KeyPart::Global)
            .collect();
        if parts.len() != values.len() {
            return Err(format!(
                "quota `{}` is keyed by {} part(s): give `key=` once per part, in order",
                quota.spec.name,
                parts.len()
            ));
        }
        let mut identity: Option<Identity> = None;
        let mut headers = HeaderMap::new();
        let mut ip = None;
        for (part, value) in parts.into_iter().zip(values) {
            match part {
                KeyPart::Consumer => {
                    identity.get_or_insert_with(Identity::default).consumer = Some(value.clone())
                }
                KeyPart::ClientIp => {
                    ip = Some(
                        value
                            .parse()
                            .map_err(|_| format!("`{value}` is not an IP address"))?,
                    )
                }
                KeyPart::Header(name) => {
                    let value = HeaderValue::from_str(value)
                        .map_err(|_| format!("`{value}` is not a header value"))?;
                    headers.insert(name.clone(), value);
                }
                KeyPart::Claim(claim) => {
                    identity
                        .get_or_insert_with(Identity::default)
                        .claims
                        .insert(claim.clone(), serde_json::Value::String(value.clone()));
                }
                KeyPart::Global | KeyPart::Route => {}
            }
        }
        Ok((identity, headers, ip))
    }
}

/// What `quota.lua` does.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Read = 0,
    Take = 1,
    Refund = 2,
}

/// The quota's limit for this consumer's tier.
fn limit_for(spec: &QuotaSpec, identity: Option<&Identity>) -> u64 {
    let tier = identity.and_then(|i| i.tier.as_deref());
    tier.and_then(|tier| spec.tiers.iter().find(|(name, _)| name == tier))
        .map_or(spec.limit, |(_, limit)| *limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_day_ends_at_midnight_in_the_quota_time_zone() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        // 22:59:59 UTC is 23:59:59 in Paris (UTC+1 in winter): still the 31st there.
        let period = period_at(QuotaPeriod::Day, &paris, at("2026-12-31T22:59:59Z")).unwrap();
        assert_eq!(period.id, "2026-12-31");
        assert_eq!(period.ends, at("2026-12-31T23:00:00Z"));
        let period = period_at(QuotaPeriod::Day, &paris, at("2026-12-31T23:00:00Z")).unwrap();
        assert_eq!(period.id, "2027-01-01");
        let utc = period_at(QuotaPeriod::Day, &TimeZone::UTC, at("2026-12-31T23:00:00Z")).unwrap();
        assert_eq!(utc.id, "2026-12-31");
        assert_eq!(utc.ends, at("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn a_month_ends_on_the_first_of_the_next_and_dst_changes_move_the_instant() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let march = period_at(QuotaPeriod::Month, &paris, at("2027-03-15T12:00:00Z")).unwrap();
        // April 1st is summer time in Paris (UTC+2).
        assert_eq!(
            (march.id.as_str(), march.ends),
            ("2027-03", at("2027-03-31T22:00:00Z"))
        );
        let december = period_at(
            QuotaPeriod::Month,
            &TimeZone::UTC,
            at("2026-12-31T23:59:59Z"),
        )
        .unwrap();
        assert_eq!(
            (december.id.as_str(), december.ends),
            ("2026-12", at("2027-01-01T00:00:00Z"))
        );
        // The day of the spring change is 23 hours long.
        let change = period_at(QuotaPeriod::Day, &paris, at("2027-03-28T12:00:00Z")).unwrap();
        assert_eq!(change.ends, at("2027-03-28T22:00:00Z"));
    }
}
