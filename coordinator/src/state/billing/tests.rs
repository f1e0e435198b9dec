//! The invoice commands on the state machine: idempotent creation, the status transitions, the
//! per-tenant bound, purge, and what each command writes to the audit trail.

use super::plan::{Currency, PricePlan};
use super::*;
use crate::state::tenant::Lifecycle;
use crate::state::tests_support::{booted, create, next_index};
use crate::state::{Command, Meta, Op, Response};

const DAY_MS: u64 = 86_400_000;
/// 2026-12-02: November 2026 has ended.
const DEC_2: u64 = 1_796_083_200_000 + DAY_MS;

fn d(s: &str) -> Decimal {
    Decimal::from_str_exact(s).expect("decimal")
}

fn free_plan() -> PricePlan {
    PricePlan {
        tier: Tier::Free,
        currency: Currency::parse("EUR").expect("known"),
        issuer: "Berqenas".into(),
        base_fee: d("9.90"),
        disk_gb_month: d("0.10"),
        events_million: d("1"),
        vpn_gb: d("0.05"),
        extra_connection: d("1"),
        included_disk_gb_months: Decimal::ZERO,
        included_events_millions: Decimal::ZERO,
        included_vpn_gb: Decimal::ZERO,
        included_connections: 5,
        payment_terms_days: 14,
    }
}

fn acme() -> TenantName {
    TenantName::parse("acme").expect("valid")
}

fn nov() -> Period {
    Period::parse("2026-11").expect("valid")
}

fn run(s: &mut State, now: u64, op: Op) -> Response {
    let i = next_index(s);
    let meta = Meta {
        time_ms: now,
        actor: "00000000000000aa".into(),
        source: "t".into(),
        key_role: None,
        user_generation: None,
    };
    s.apply(i, &Command { meta, op }).0
}

fn invoice(r: Response) -> Invoice {
    match r {
        Ok(Reply::Invoice(i)) => *i,
        other => panic!("not an invoice: {other:?}"),
    }
}

fn invoice_op(period: Period) -> Op {
    Op::Invoice(InvoiceOp::Create { tenant: acme(), period, plan: Box::new(free_plan()) })
}

fn with_acme() -> State {
    let mut s = booted();
    create(&mut s, "acme");
    s
}

#[test]
fn invoicing_a_month_twice_returns_the_same_invoice() {
    let mut s = with_acme();
    let first = invoice(run(&mut s, DEC_2, invoice_op(nov())));
    assert_eq!(first.id, "acme-2026-11");
    assert_eq!((first.status, first.total, first.lines.len()), (InvoiceStatus::Draft, d("9.90"), 1));
    assert_eq!(first.created_at_ms, DEC_2);
    let mut dearer = free_plan();
    dearer.base_fee = d("99.00");
    let op = Op::Invoice(InvoiceOp::Create { tenant: acme(), period: nov(), plan: Box::new(dearer) });
    let again = invoice(run(&mut s, DEC_2 + 1000, op));
    assert_eq!(again, first, "same number, same lines, not recomputed");
    assert_eq!(s.invoices.len(), 1);
    let entries = s.audit.take_fresh();
    let last = entries.last().expect("audited");
    assert_eq!((last.action.as_str(), last.target.as_str()), ("invoice.create", "tenant/acme/invoice/acme-2026-11"));
    assert_eq!(last.details.get("existing").map(String::as_str), Some("true"));
}

#[test]
fn a_month_not_yet_ended_or_an_unknown_tenant_is_refused() {
    let mut s = with_acme();
    let dec = Period::parse("2026-12").expect("valid");
    let r = run(&mut s, DEC_2, invoice_op(dec));
    assert!(matches!(&r, Err(DomainError::Conflict(m)) if m.contains("has not ended")), "{r:?}");
    let op = Op::Invoice(InvoiceOp::Create {
        tenant: TenantName::parse("ghost").expect("valid"),
        period: nov(),
        plan: Box::new(free_plan()),
    });
    assert!(matches!(run(&mut s, DEC_2, op), Err(DomainError::NotFound(_))));
    let mut premium = free_plan();
    premium.tier = Tier::Premium;
    let op = Op::Invoice(InvoiceOp::Create { tenant: acme(), period: nov(), plan: Box::new(premium) });
    assert!(matches!(run(&mut s, DEC_2, op), Err(DomainError::Conflict(_))), "a plan of another tier");
    let mut negative = free_plan();
    negative.vpn_gb = d("-1");
    let op = Op::Invoice(InvoiceOp::Create { tenant: acme(), period: nov(), plan: Box::new(negative) });
    assert!(matches!(run(&mut s, DEC_2, op), Err(DomainError::Invalid(_))), "plans are re-checked at apply");
    assert!(s.invoices.is_empty());
}

#[test]
fn status_moves_draft_issued_paid_and_never_back() {
    let mut s = with_acme();
    let id = invoice(run(&mut s, DEC_2, invoice_op(nov()))).id;
    let issue = || Op::Invoice(InvoiceOp::Issue { tenant: acme(), id: "acme-2026-11".into() });
    let paid = || Op::Invoice(InvoiceOp::MarkPaid { tenant: acme(), id: "acme-2026-11".into() });
    let r = run(&mut s, DEC_2, paid());
    assert!(matches!(&r, Err(DomainError::Conflict(m)) if m.contains("draft")), "{r:?}");
    let issued = invoice(run(&mut s, DEC_2 + 10, issue()));
    assert_eq!(issued.status, InvoiceStatus::Issued);
    assert_eq!(issued.due_at_ms, Some(DEC_2 + 10 + 14 * DAY_MS));
    assert_eq!(issued.status_at(DEC_2 + 10 + 14 * DAY_MS), ShownStatus::Issued, "due today is not overdue");
    assert_eq!(issued.status_at(DEC_2 + 11 + 14 * DAY_MS), ShownStatus::Overdue);
    let r = run(&mut s, DEC_2, issue());
    assert!(matches!(&r, Err(DomainError::Conflict(m)) if m.contains("already issued")), "{r:?}");
    // Overdue can still be paid.
    let done = invoice(run(&mut s, DEC_2 + 20 * DAY_MS, paid()));
    assert_eq!((done.status, done.paid_at_ms), (InvoiceStatus::Paid, Some(DEC_2 + 20 * DAY_MS)));
    assert_eq!(done.status_at(u64::MAX), ShownStatus::Paid);
    for op in [paid(), issue()] {
        let r = run(&mut s, DEC_2 + 21 * DAY_MS, op);
        assert!(matches!(&r, Err(DomainError::Conflict(m)) if m.contains("already paid")), "{r:?}");
    }
    // Creating it again returns the paid invoice, not a new draft.
    assert_eq!(invoice(run(&mut s, DEC_2 + 22 * DAY_MS, invoice_op(nov()))).status, InvoiceStatus::Paid);
    assert_eq!(s.invoices[&id].status, InvoiceStatus::Paid);
}

#[test]
fn another_tenants_invoice_is_not_found() {
    let mut s = with_acme();
    create(&mut s, "globex");
    run(&mut s, DEC_2, invoice_op(nov())).expect("created");
    let globex = TenantName::parse("globex").expect("valid");
    for op in [
        Op::Invoice(InvoiceOp::Issue { tenant: globex.clone(), id: "acme-2026-11".into() }),
        Op::Invoice(InvoiceOp::MarkPaid { tenant: globex.clone(), id: "acme-2026-11".into() }),
    ] {
        assert!(matches!(run(&mut s, DEC_2, op), Err(DomainError::NotFound(_))));
    }
    assert!(s.invoices_of(&globex).is_empty());
    assert_eq!(s.invoices["acme-2026-11"].status, InvoiceStatus::Draft);
}

#[test]
fn invoices_per_tenant_are_bounded_by_dropping_the_oldest_paid() {
    let mut s = with_acme();
    let mut period = Period::parse("2020-01").expect("valid");
    for _ in 0..MAX_INVOICES_PER_TENANT {
        run(&mut s, DEC_2, invoice_op(period)).expect("created");
        period = period.next().expect("a next month");
    }
    let r = run(&mut s, DEC_2, invoice_op(period));
    assert!(matches!(&r, Err(DomainError::Exhausted(_))), "none paid: refused, {r:?}");
    for id in ["acme-2020-03", "acme-2020-02"] {
        run(&mut s, DEC_2, Op::Invoice(InvoiceOp::Issue { tenant: acme(), id: id.into() })).expect("issued");
        run(&mut s, DEC_2, Op::Invoice(InvoiceOp::MarkPaid { tenant: acme(), id: id.into() })).expect("paid");
    }
    let i = next_index(&s);
    let meta = Meta { time_ms: DEC_2, actor: "t".into(), source: "t".into(), key_role: None, user_generation: None };
    let (r, touched) = s.apply(i, &Command { meta, op: invoice_op(period) });
    assert_eq!(invoice(r).id, "acme-2023-01");
    assert_eq!(touched, [Touched::Invoice("acme-2020-02".into()), Touched::Invoice("acme-2023-01".into())]);
    assert_eq!(s.invoices_of(&acme()).len(), MAX_INVOICES_PER_TENANT);
    assert!(s.invoices.contains_key("acme-2020-01") && s.invoices.contains_key("acme-2020-03"));
}

#[test]
fn purging_a_tenant_drops_its_invoices() {
    let mut s = with_acme();
    create(&mut s, "globex");
    run(&mut s, DEC_2, invoice_op(nov())).expect("created");
    let globex = TenantName::parse("globex").expect("valid");
    let op = Op::Invoice(InvoiceOp::Create { tenant: globex.clone(), period: nov(), plan: Box::new(free_plan()) });
    run(&mut s, DEC_2, op).expect("created");
    run(&mut s, DEC_2, Op::Lifecycle { name: acme(), step: Lifecycle::Delete }).expect("deleted");
    run(&mut s, DEC_2, Op::Lifecycle { name: acme(), step: Lifecycle::Purge { force: true } }).expect("purged");
    assert!(s.invoices_of(&acme()).is_empty());
    assert_eq!(s.invoices_of(&globex).len(), 1);
}

#[test]
fn invoice_numbers_name_their_tenant_and_month() {
    assert_eq!(invoice_id(&acme(), nov()), "acme-2026-11");
    assert_eq!(parse_invoice_id("acme-2026-11"), Some((acme(), nov())));
    for bad in ["acme", "acme-2026", "Acme-2026-11", "acme-2026-13", "-2026-11", "acme-2026-11-x", "a-2026-11"] {
        assert_eq!(parse_invoice_id(bad), None, "{bad}");
    }
}

#[test]
fn invoices_survive_a_json_round_trip_exactly() {
    let mut s = with_acme();
    let i = invoice(run(&mut s, DEC_2, invoice_op(nov())));
    let json = serde_json::to_string(&i).expect("encodes");
    assert!(json.contains("\"total\":\"9.90\""), "money is a decimal string: {json}");
    let back: Invoice = serde_json::from_str(&json).expect("decodes");
    assert_eq!(back, i);
}

#[test]
fn every_invoice_command_is_audited_as_described() {
    let mut s = with_acme();
    s.audit.take_fresh();
    let ops = [
        invoice_op(nov()),
        Op::Invoice(InvoiceOp::MarkPaid { tenant: acme(), id: "acme-2026-11".into() }),
        Op::Invoice(InvoiceOp::Issue { tenant: acme(), id: "acme-2026-11".into() }),
        Op::Invoice(InvoiceOp::MarkPaid { tenant: acme(), id: "acme-2026-11".into() }),
    ];
    let want = [
        ("invoice.create", "ok"),
        ("invoice.mark-paid", "rejected"),
        ("invoice.issue", "ok"),
        ("invoice.mark-paid", "ok"),
    ];
    for (op, (action, outcome)) in ops.into_iter().zip(want) {
        let (described, target) = op.describe();
        let result = run(&mut s, DEC_2, op);
        assert_eq!(result.is_ok(), outcome == "ok", "{result:?}");
        let entries = s.audit.take_fresh();
        let [entry] = &entries[..] else { panic!("one entry per command: {entries:?}") };
        assert_eq!((entry.action.as_str(), described.as_str()), (action, action));
        assert_eq!(entry.target, target.to_string());
        assert_eq!(entry.target, "tenant/acme/invoice/acme-2026-11");
        assert_eq!(serde_json::to_value(entry.outcome).expect("outcome"), serde_json::json!(outcome));
    }
}
