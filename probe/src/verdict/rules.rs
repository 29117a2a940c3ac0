//! The scoring rules, as data: an ordered table of (rule id, conditions, outcome); the first rule
//! whose conditions all hold decides. Two versioned sets:
//!
//! - [`OONI`] reproduces OONI's classic web_connectivity verdicts (ts-017 v0.5.28,
//!   `webconnectivitylte/analysisclassic.go` in `ooni/probe-cli`), so our numbers can be
//!   compared with theirs.
//! - [`VANTAGE`] is the same table with Vantage's fixes as separate rules, each named: TLS
//!   interference is `tls`, not `http-failure`; injected duplicate DNS answers are DNS tampering;
//!   a known CAPTCHA or geo-block page is not a blockpage; (in DNS consistency) an address
//!   that completed a TLS handshake for the host is the host's; a control in which the
//!   helper measured nothing of the site is no control; (from `vantage-2`) headers every
//!   server sends never make two pages the same, a page whose title and content differ from
//!   the control's is `http-diff` whatever its length, and a failed AAAA lookup beside an A
//!   answer that matches the control leaves DNS consistent; (from `vantage-3`) a page whose
//!   body was still arriving steadily when the deadline cut it, while the helper got the page,
//!   is throttled, not an HTTP failure (`docs/scoring.md`).
//!
//! A stored verdict names the set and version that produced it, so history can be rescored.

/// A condition over a measurement's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// No control (no helper, or it failed).
    NoControl,
    /// The probe's classic lookup returned only bogons; the control resolved a public address.
    ProbeDnsOnlyBogons,
    /// A later UDP answer to the same query differs from the first (injection).
    InjectedDnsAnswers,
    /// The deciding step is an HTTP response without error.
    HttpOk,
    /// ... received over TLS.
    OverTls,
    /// The deciding step is a failed HTTP exchange.
    HttpFailed,
    /// The deciding step is a failed TLS handshake.
    TlsFailed,
    /// The deciding step is a failed TCP connect.
    TcpFailed,
    /// The deciding step is a failed DNS lookup.
    DnsFailed,
    /// The final page matches a false-positive (`fp`) fingerprint.
    FalsePositivePage,
    /// HTTP diff says the probe got the control's page (with the set's
    /// [`RuleSet::strict_page_match`]).
    SamePage,
    /// HTTP diff says the probe's page differs from the control's in title and content
    /// ([`super::http_diff::HttpDiff::different_page`]); only in a set with
    /// [`RuleSet::strict_page_match`].
    DifferentPage,
    /// The deciding HTTP exchange was cut by its deadline while the body was still arriving
    /// steadily ([`crate::throttling::passive::steady_cut_kbps`]); only in a set with
    /// [`RuleSet::steady_cut_is_throttling`].
    BodySteadyAtDeadline,
    /// The control's HTTP request failed.
    ControlHttpFailed,
    /// The control fetched the page.
    ControlHttpOk,
    /// The control's TLS handshake to the failing endpoint failed.
    ControlTlsFailed,
    /// The control's TLS handshake to the failing endpoint succeeded.
    ControlTlsOk,
    /// The control's TCP connect to the failing endpoint failed.
    ControlTcpFailed,
    /// The control's TCP connect to the failing endpoint succeeded.
    ControlTcpOk,
    /// The control's DNS lookup failed.
    ControlDnsFailed,
    /// The probe got `dns_no_answer` and the control resolved nothing.
    ProbeNoAnswerControlEmpty,
}

/// What a rule concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `blocking=false, accessible=true`.
    Accessible,
    /// `blocking=false, accessible=false`: down for the control too.
    Down,
    /// `blocking=null, accessible=null`.
    Undetermined,
    /// `blocking=<type>, accessible=false`.
    Blocked(&'static str),
    /// `blocking="throttling", accessible=true`: the page arrives, held to a low rate; the
    /// active throttling test's words for the same finding.
    Throttled,
}

/// One rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Stable id, stored with the verdict.
    pub id: &'static str,
    /// All must hold.
    pub when: &'static [Cond],
    /// The conclusion.
    pub then: Outcome,
}

/// A versioned rule set.
#[derive(Debug, Clone, Copy)]
pub struct RuleSet {
    /// `ooni` or `vantage`.
    pub name: &'static str,
    /// Version string stored with every verdict.
    pub version: &'static str,
    /// The rules, in order.
    pub rules: &'static [Rule],
    /// DNS consistency accepts an address proven by a TLS handshake for the host.
    pub tls_proves_address: bool,
    /// A confirmed fingerprint turns a verdict that is not a block into one.
    pub fingerprints_decide: bool,
    /// A control that measured nothing of the site ([`crate::th::unusable`]: the helper's own
    /// refusal written as the site's failure, or a partial answer) is no control, even in a
    /// measurement whose `control_failure` is null. OONI's analysis uses such a control (its own
    /// helper answers so for a site on private addresses) and reads the site as down, or as
    /// blocked when the probe got the page.
    pub unusable_control_is_none: bool,
    /// Pages are the same by [`super::http_diff::HttpDiff::same_page_vantage`]: headers every
    /// server sends do not count, and a page of another title and content is never the same.
    pub strict_page_match: bool,
    /// A failed AAAA lookup beside an A answer that matches the control does not make DNS
    /// inconsistent ([`super::consistency`]).
    pub aaaa_failure_beside_valid_a: bool,
    /// A body cut by the deadline while still arriving steadily is a throttling signal, not an
    /// HTTP failure ([`Cond::BodySteadyAtDeadline`]).
    pub steady_cut_is_throttling: bool,
}

use Cond::*;
use Outcome::*;

const fn rule(id: &'static str, when: &'static [Cond], then: Outcome) -> Rule {
    Rule { id, when, then }
}

/// OONI's classic web_connectivity rules.
pub const OONI: RuleSet = RuleSet {
    name: "ooni",
    version: "ooni-classic-0.5.28",
    rules: &[
        rule("dns-bogon-answer", &[ProbeDnsOnlyBogons], Blocked("dns")),
        rule("https-page", &[HttpOk, OverTls], Accessible),
        rule("no-control", &[NoControl], Undetermined),
        rule(
            "http-unexpected-success",
            &[HttpOk, ControlHttpFailed],
            Blocked("http-diff"),
        ),
        rule("http-same-page", &[HttpOk, SamePage], Accessible),
        rule("http-diff", &[HttpOk], Blocked("http-diff")),
        rule("http-down", &[HttpFailed, ControlHttpFailed], Down),
        rule("http-failure", &[HttpFailed], Blocked("http-failure")),
        rule("tls-down", &[TlsFailed, ControlTlsFailed], Down),
        rule(
            "tls-interference",
            &[TlsFailed, ControlTlsOk],
            Blocked("http-failure"),
        ),
        rule(
            "tls-failure-control-page",
            &[TlsFailed, ControlHttpOk],
            Blocked("http-failure"),
        ),
        rule("tcp-down", &[TcpFailed, ControlTcpFailed], Down),
        rule("tcp-blocked", &[TcpFailed, ControlTcpOk], Blocked("tcp_ip")),
        rule(
            "tcp-failure-control-page",
            &[TcpFailed, ControlHttpOk],
            Blocked("http-failure"),
        ),
        rule("dns-down", &[DnsFailed, ControlDnsFailed], Down),
        rule(
            "dns-down-no-answer",
            &[DnsFailed, ProbeNoAnswerControlEmpty],
            Down,
        ),
        rule("dns-blocked", &[DnsFailed], Blocked("dns")),
        rule("down-for-control", &[ControlHttpFailed], Down),
        rule("undetermined", &[], Undetermined),
    ],
    tls_proves_address: false,
    fingerprints_decide: false,
    unusable_control_is_none: false,
    strict_page_match: false,
    aaaa_failure_beside_valid_a: false,
    steady_cut_is_throttling: false,
};

/// OONI's rules with Vantage's fixes.
pub const VANTAGE: RuleSet = RuleSet {
    name: "vantage",
    // vantage-2: headers every server sends, different pages, failed AAAA lookups.
    // vantage-3: a body still arriving at the deadline is throttled.
    version: "vantage-3",
    rules: &[
        // Fix: injected answers are tampering even when the first answer looks plausible.
        rule(
            "dns-injected-answers",
            &[InjectedDnsAnswers],
            Blocked("dns"),
        ),
        rule("dns-bogon-answer", &[ProbeDnsOnlyBogons], Blocked("dns")),
        rule("https-page", &[HttpOk, OverTls], Accessible),
        // Fix: a CDN challenge or a site's own geo-block is not a censor's blockpage.
        rule(
            "false-positive-page",
            &[HttpOk, FalsePositivePage],
            Accessible,
        ),
        rule("no-control", &[NoControl], Undetermined),
        rule(
            "http-unexpected-success",
            &[HttpOk, ControlHttpFailed],
            Blocked("http-diff"),
        ),
        // Fix: another title and content is another page, whatever its length or headers;
        // unconfirmed until a fingerprint matches.
        rule(
            "http-different-page",
            &[HttpOk, DifferentPage],
            Blocked("http-diff"),
        ),
        rule("http-same-page", &[HttpOk, SamePage], Accessible),
        rule("http-diff", &[HttpOk], Blocked("http-diff")),
        rule("http-down", &[HttpFailed, ControlHttpFailed], Down),
        // Fix: a page still arriving steadily when the deadline cut it, which the helper got,
        // is held to a rate, not failed (the rate is the verdict's goodput).
        rule(
            "http-body-throttled",
            &[HttpFailed, ControlHttpOk, BodySteadyAtDeadline],
            Throttled,
        ),
        rule("http-failure", &[HttpFailed], Blocked("http-failure")),
        rule("tls-down", &[TlsFailed, ControlTlsFailed], Down),
        // Fix: TLS interference is its own type, not `http-failure`.
        rule(
            "tls-interference",
            &[TlsFailed, ControlTlsOk],
            Blocked("tls"),
        ),
        rule(
            "tls-failure-control-page",
            &[TlsFailed, ControlHttpOk],
            Blocked("tls"),
        ),
        rule("tcp-down", &[TcpFailed, ControlTcpFailed], Down),
        rule("tcp-blocked", &[TcpFailed, ControlTcpOk], Blocked("tcp_ip")),
        rule(
            "tcp-failure-control-page",
            &[TcpFailed, ControlHttpOk],
            Blocked("http-failure"),
        ),
        rule("dns-down", &[DnsFailed, ControlDnsFailed], Down),
        rule(
            "dns-down-no-answer",
            &[DnsFailed, ProbeNoAnswerControlEmpty],
            Down,
        ),
        rule("dns-blocked", &[DnsFailed], Blocked("dns")),
        rule("down-for-control", &[ControlHttpFailed], Down),
        rule("undetermined", &[], Undetermined),
    ],
    tls_proves_address: true,
    fingerprints_decide: true,
    unusable_control_is_none: true,
    strict_page_match: true,
    aaaa_failure_beside_valid_a: true,
    steady_cut_is_throttling: true,
};

/// The previous Vantage set, `vantage-2`, kept so that verdicts stored with it can be compared
/// with today's (`docs/scoring.md`, "What vantage-3 changed"); not offered by
/// [`RuleSet::by_name`].
pub const VANTAGE_2: RuleSet = RuleSet {
    version: "vantage-2",
    // Without it, `http-body-throttled` never fires, so the rules are vantage-2's.
    steady_cut_is_throttling: false,
    ..VANTAGE
};

/// The previous Vantage set, `vantage-1`, kept so that verdicts stored with it can be
/// compared with today's (`docs/scoring.md`, "What vantage-2 changed"); not offered by
/// [`RuleSet::by_name`].
pub const VANTAGE_1: RuleSet = RuleSet {
    version: "vantage-1",
    // Without these two, `http-different-page` never fires ([`Cond::DifferentPage`] holds only
    // under a strict page match), so the rules are vantage-1's.
    strict_page_match: false,
    aaaa_failure_beside_valid_a: false,
    steady_cut_is_throttling: false,
    ..VANTAGE
};

impl RuleSet {
    /// The set named `name` (`ooni` or `vantage`).
    pub fn by_name(name: &str) -> Option<RuleSet> {
        [OONI, VANTAGE].into_iter().find(|s| s.name == name)
    }
}
