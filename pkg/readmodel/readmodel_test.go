package readmodel_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/readmodel"
)

func TestMigrationOrder(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"already in order", []string{"ingest", "api", "policy", "risk", "ledger"}, []string{"ingest", "api", "policy", "risk", "ledger"}},
		{"a reader listed first waits for the owner", []string{"risk", "ledger", "policy", "api"}, []string{"policy", "risk", "ledger", "api"}},
		{"an owner not in the set is not added", []string{"risk", "notifier"}, []string{"risk", "notifier"}},
		{"unknown services keep their place", []string{"guardian", "risk", "policy"}, []string{"guardian", "policy", "risk"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readmodel.MigrationOrder(tt.in); !slices.Equal(got, tt.want) {
				t.Fatalf("MigrationOrder(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// TestDeclaration: one owner per table, no table declared twice, an
// owner never listed as a reader or extra writer of its own table, and no cycle among
// view dependencies (which would make the migration order impossible).
func TestDeclaration(t *testing.T) {
	seen := map[string]bool{}
	for _, tb := range readmodel.Tables {
		if seen[tb.Name] {
			t.Errorf("%s declared twice", tb.Name)
		}
		seen[tb.Name] = true
		if tb.Owner == "" || len(tb.Columns) == 0 {
			t.Errorf("%s: no owner or no columns", tb.Name)
		}
		if slices.Contains(tb.Readers, tb.Owner) || slices.Contains(tb.ViewedBy, tb.Owner) || slices.Contains(tb.Writers, tb.Owner) {
			t.Errorf("%s: owner %s listed as its reader", tb.Name, tb.Owner)
		}
		for _, v := range tb.ViewedBy {
			for _, dep := range readmodel.ViewDependencies(tb.Owner) {
				if dep.Owner == v {
					t.Errorf("cycle: %s views %s's %s and %s views %s's %s", v, tb.Owner, tb.Name, tb.Owner, v, dep.Name)
				}
			}
		}
	}
	if got := readmodel.ViewDependencies("risk"); len(got) != 1 || got[0].Name != "decisions" {
		t.Errorf("risk's view dependencies = %v, want decisions", got)
	}
}

// TestAwaitViewDependencies: risk waits for the decisions table until the
// policy service creates it, and gives up with ctx.
func TestAwaitViewDependencies(t *testing.T) {
	db := chtest.New(t)
	log := slog.New(slog.DiscardHandler)
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := readmodel.AwaitViewDependencies(short, db.Conn, "risk", log); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("without decisions: %v, want the deadline", err)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	done := make(chan error, 1)
	go func() { done <- readmodel.AwaitViewDependencies(ctx, db.Conn, "risk", log) }()
	if err := db.Conn.Exec(ctx, "CREATE TABLE decisions (tenant_id String) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("after decisions was created: %v", err)
	}
	if err := readmodel.AwaitViewDependencies(ctx, db.Conn, "ledger", log); err != nil {
		t.Fatalf("a service without view dependencies: %v", err)
	}
}
