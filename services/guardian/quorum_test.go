package guardian

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// refusal is the kind and detail code of a refused request ("" for none).
func refusal(err error) (apperr.Kind, string) {
	var ae *apperr.Error
	if !errors.As(err, &ae) {
		return apperr.KindOf(err), ""
	}
	if len(ae.Details) == 0 {
		return ae.Kind, ""
	}
	return ae.Kind, ae.Details[0].Code
}

// holdWith publishes a require_approval decision carrying reqs and waits
// for its pending action.
func holdWith(t *testing.T, r *running, env *natstest.Env, id string, reqs ...policy.ApprovalRequirement) approval.Action {
	t.Helper()
	publishRecord(t, env, "acme", id, policy.Decision{Outcome: policy.RequireApproval, ReasonCodes: []string{"X"}, ApprovalTimeout: time.Hour, Approvals: reqs})
	var a approval.Action
	testkit.Eventually(t, "pending action "+id, func() (ok bool) { a, ok = r.board.ByDecision("acme", id); return ok })
	return a
}

func TestQuorumTwoOfFinance(t *testing.T) {
	env := natstest.Start(t)
	r := run(t, env)
	a := holdWith(t, r, env, "dec_q", policy.ApprovalRequirement{RuleID: "payout", Required: 2, Groups: []string{"finance"}})
	if a.RequestedBy != "key:asker" || a.Required != 2 || len(a.Quorum) != 1 || a.ReviewerGroup != "finance" {
		t.Fatalf("pending action %+v", a)
	}
	finance := []string{"finance"}
	steps := []struct {
		name     string
		by       string
		groups   []string
		kind     apperr.Kind
		code     string
		status   approval.Status
		approved int
	}{
		{"the asker cannot approve", "key:asker", finance, apperr.KindForbidden, approval.CodeSeparationOfDuties, approval.Pending, 0},
		{"outside the group", "member:eve@x.io", []string{"ops"}, apperr.KindForbidden, approval.CodeNotReviewer, approval.Pending, 0},
		{"a key has no groups", "key:owner", nil, apperr.KindForbidden, approval.CodeNotReviewer, approval.Pending, 0},
		{"first approver: 1 of 2", "member:ann@x.io", finance, 0, "", approval.Pending, 1},
		{"same person twice", "member:ann@x.io", finance, apperr.KindConflict, approval.CodeDuplicateApprover, approval.Pending, 1},
		{"second person: approved", "member:bob@x.io", []string{"ops", "finance"}, 0, "", approval.Approved, 2},
		{"after approval", "member:cy@x.io", finance, apperr.KindConflict, "", approval.Approved, 2},
	}
	for _, st := range steps {
		got, err := r.svc.Decide(context.Background(), approval.DecideRequest{Tenant: "acme", ID: a.ID, Decision: "approve", By: st.by, Groups: st.groups})
		kind, code := refusal(err)
		if (err != nil) != (st.kind != 0) || kind != st.kind && st.kind != 0 || code != st.code {
			t.Fatalf("%s: err %v (kind %d code %q), want kind %d code %q", st.name, err, kind, code, st.kind, st.code)
		}
		cur, _ := r.svc.current(context.Background(), "acme", a.ID)
		if cur.Status != st.status || len(cur.Approvals) != st.approved || len(cur.Quorum[0].ApprovedBy) != st.approved {
			t.Fatalf("%s: state %s with %d approvals %+v, want %s with %d", st.name, cur.Status, len(cur.Approvals), cur.Quorum, st.status, st.approved)
		}
		if err == nil && got.Revision != cur.Revision {
			t.Fatalf("%s: answered revision %d, stored %d", st.name, got.Revision, cur.Revision)
		}
	}
	final, _ := r.svc.current(context.Background(), "acme", a.ID)
	if final.DecidedBy != "member:bob@x.io" || final.Approvals[0].By != "member:ann@x.io" {
		t.Fatalf("approved action %+v", final)
	}
}

func TestQuorumRejectAndFailClosed(t *testing.T) {
	env := natstest.Start(t)
	r := run(t, env)
	tests := []struct {
		name   string
		reqs   []policy.ApprovalRequirement
		req    approval.DecideRequest
		kind   apperr.Kind
		code   string
		status approval.Status
	}{
		{"an unknown group admits no one", []policy.ApprovalRequirement{{RuleID: "r", Required: 1, Groups: []string{"no-such-group"}}},
			approval.DecideRequest{Decision: "approve", By: "member:ann@x.io", Groups: []string{"finance"}}, apperr.KindForbidden, approval.CodeNotReviewer, approval.Pending},
		{"a reviewer rejects", []policy.ApprovalRequirement{{RuleID: "r", Required: 2, Groups: []string{"finance"}}},
			approval.DecideRequest{Decision: "reject", By: "member:ann@x.io", Groups: []string{"finance"}}, 0, "", approval.Rejected},
		{"an outsider cannot reject", []policy.ApprovalRequirement{{RuleID: "r", Required: 2, Groups: []string{"finance"}}},
			approval.DecideRequest{Decision: "reject", By: "member:eve@x.io", Groups: []string{"ops"}}, apperr.KindForbidden, "", approval.Pending},
		{"the asker withdraws", []policy.ApprovalRequirement{{RuleID: "r", Required: 2, Groups: []string{"finance"}}},
			approval.DecideRequest{Decision: "reject", By: "key:asker"}, 0, "", approval.Rejected},
		{"a halt rejects", []policy.ApprovalRequirement{{RuleID: "r", Required: 2, Groups: []string{"finance"}}},
			approval.DecideRequest{Decision: "reject", By: "halt:h1", System: true}, 0, "", approval.Rejected},
		{"Vigil never approves", nil,
			approval.DecideRequest{Decision: "approve", By: "halt:h1", System: true}, apperr.KindForbidden, "", approval.Pending},
		{"both rules must be met: one is not enough", []policy.ApprovalRequirement{{RuleID: "a", Required: 1, Groups: []string{"finance"}}, {RuleID: "b", Required: 1, Groups: []string{"cfo"}}},
			approval.DecideRequest{Decision: "approve", By: "member:ann@x.io", Groups: []string{"finance"}}, 0, "", approval.Pending},
		{"both rules met by one person in both groups", []policy.ApprovalRequirement{{RuleID: "a", Required: 1, Groups: []string{"finance"}}, {RuleID: "b", Required: 1, Groups: []string{"cfo"}}},
			approval.DecideRequest{Decision: "approve", By: "member:ann@x.io", Groups: []string{"finance", "cfo"}}, 0, "", approval.Approved},
		{"no approvals block: anyone but the asker", nil,
			approval.DecideRequest{Decision: "approve", By: "key:owner"}, 0, "", approval.Approved},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := holdWith(t, r, env, "dec_f"+string(rune('a'+i)), tt.reqs...)
			req := tt.req
			req.Tenant, req.ID = "acme", a.ID
			_, err := r.svc.Decide(context.Background(), req)
			kind, code := refusal(err)
			if (err != nil) != (tt.kind != 0) || (tt.kind != 0 && kind != tt.kind) || (tt.code != "" && code != tt.code) {
				t.Fatalf("err %v (kind %d code %q), want kind %d code %q", err, kind, code, tt.kind, tt.code)
			}
			if cur, _ := r.svc.current(context.Background(), "acme", a.ID); cur.Status != tt.status {
				t.Fatalf("status %s, want %s", cur.Status, tt.status)
			}
		})
	}
}

func TestUnknownRequesterCannotBeApproved(t *testing.T) {
	env := natstest.Start(t)
	r := run(t, env)
	publishRecordAs(t, env, "acme", "dec_anon", policy.Principal{}, policy.Decision{Outcome: policy.RequireApproval})
	testkit.Eventually(t, "pending action", func() bool { _, ok := r.board.ByDecision("acme", "dec_anon"); return ok })
	_, err := r.svc.Decide(context.Background(), approval.DecideRequest{Tenant: "acme", ID: "pa_anon", Decision: "approve", By: "key:owner"})
	if kind, code := refusal(err); kind != apperr.KindForbidden || code != approval.CodeRequesterUnknown {
		t.Fatalf("approve with no requester: %v", err)
	}
	if a, err := r.svc.Decide(context.Background(), approval.DecideRequest{Tenant: "acme", ID: "pa_anon", Decision: "reject", By: "key:owner"}); err != nil || a.Status != approval.Rejected {
		t.Fatalf("reject with no requester: %+v %v", a, err)
	}
}

// TestEscalationBySweeper: before the escalation is due only finance
// may approve; the guardian's sweeper (not the test) escalates, and then
// security may.
func TestEscalationBySweeper(t *testing.T) {
	env := natstest.Start(t)
	r := run(t, env)
	a := holdWith(t, r, env, "dec_esc", policy.ApprovalRequirement{RuleID: "r", Required: 1, Groups: []string{"finance"},
		EscalateAfter: 2 * time.Second, EscalateTo: []string{"security"}})
	sec := approval.DecideRequest{Tenant: "acme", ID: a.ID, Decision: "approve", By: "member:sam@x.io", Groups: []string{"security"}}
	if _, err := r.svc.Decide(context.Background(), sec); !apperr.Is(err, apperr.KindForbidden) {
		// Only meaningful before the escalation is due.
		if time.Now().Before(*a.Quorum[0].EscalatesAt) {
			t.Fatalf("security approved before the escalation: %v", err)
		}
	}
	testkit.Eventually(t, "escalation", func() bool {
		cur, _ := r.board.Get("acme", a.ID)
		return cur.Quorum[0].Escalated
	})
	cur, _ := r.board.Get("acme", a.ID)
	if cur.Status != approval.Pending || cur.ReviewerGroup != "security" {
		t.Fatalf("escalated action %+v", cur)
	}
	got, err := r.svc.Decide(context.Background(), sec)
	if err != nil || got.Status != approval.Approved {
		t.Fatalf("security after escalation: %+v %v", got, err)
	}
}

func TestRedeemExactlyOnce(t *testing.T) {
	env := natstest.Start(t)
	r := run(t, env)
	a := holdWith(t, r, env, "dec_r")
	good := approval.ArgumentsDigest(map[string]any{"to": "acct-1"})
	redeem := func(digest string) error {
		_, err := r.svc.Redeem(context.Background(), approval.RedeemRequest{Tenant: "acme", DecisionID: "dec_r", ArgumentsDigest: digest, By: "key:asker"})
		return err
	}
	if _, code := refusal(redeem(good)); code != approval.CodeNotApproved {
		t.Fatalf("redeem while pending: code %q", code)
	}
	if _, err := r.svc.Decide(context.Background(), approval.DecideRequest{Tenant: "acme", ID: a.ID, Decision: "approve", By: "key:owner"}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name, digest, code string
	}{
		{"other arguments", approval.ArgumentsDigest(map[string]any{"to": "acct-2"}), approval.CodeArgumentsMismatch},
		{"no arguments", approval.ArgumentsDigest(nil), approval.CodeArgumentsMismatch},
		{"the approved arguments", good, ""},
		{"again", good, approval.CodeAlreadyRedeemed},
	}
	for _, st := range steps {
		if _, code := refusal(redeem(st.digest)); code != st.code {
			t.Fatalf("%s: code %q, want %q", st.name, code, st.code)
		}
	}
	if _, err := r.svc.Redeem(context.Background(), approval.RedeemRequest{Tenant: "other", DecisionID: "dec_r", ArgumentsDigest: good}); !apperr.Is(err, apperr.KindNotFound) {
		t.Fatalf("other tenant: %v", err)
	}

	// Racing redemptions of one approval: exactly one wins.
	b := holdWith(t, r, env, "dec_race_r")
	if _, err := r.svc.Decide(context.Background(), approval.DecideRequest{Tenant: "acme", ID: b.ID, Decision: "approve", By: "key:owner"}); err != nil {
		t.Fatal(err)
	}
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		wins, lost int
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.svc.Redeem(context.Background(), approval.RedeemRequest{Tenant: "acme", DecisionID: "dec_race_r", ArgumentsDigest: good, By: "key:asker"})
			mu.Lock()
			defer mu.Unlock()
			switch kind, code := refusal(err); {
			case err == nil:
				wins++
			case kind == apperr.KindConflict && (code == approval.CodeAlreadyRedeemed || code == ""):
				lost++
			default:
				t.Errorf("unexpected: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || lost != 7 {
		t.Fatalf("wins=%d lost=%d, want exactly one redemption", wins, lost)
	}
}
