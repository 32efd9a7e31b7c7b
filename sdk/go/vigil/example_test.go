package vigil_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/vigilhq/vigil/sdk/go/vigil"
)

type RefundArgs struct {
	To     string  `json:"to"`
	Amount float64 `json:"amount"`
}

func executeRefund(ctx context.Context, a RefundArgs) (string, error) {
	return "refunded " + a.To, nil
}

// Guard a tool function: it runs only if Vigil allows it (or a person
// approved exactly these arguments).
func ExampleGuardFunc() {
	c, err := vigil.New("http://localhost:8080", os.Getenv("VIGIL_API_KEY"), vigil.WithAgent("refund-bot"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	refund := vigil.GuardFunc(c, "execute_refund", executeRefund)

	out, err := refund(context.Background(), RefundArgs{To: "acct-1", Amount: 1250})
	var blocked *vigil.BlockedError
	switch {
	case errors.As(err, &blocked):
		fmt.Println("blocked:", blocked.Decision.ReasonCodes)
	case errors.Is(err, vigil.ErrApprovalRejected):
		fmt.Println("a person said no")
	case err != nil:
		fmt.Println("not run:", err)
	default:
		fmt.Println(out)
	}
}

// Ask now, redeem just before running: the approval is for the arguments
// a person saw, once.
func ExampleClient_Ask() {
	c, err := vigil.New("http://localhost:8080", os.Getenv("VIGIL_API_KEY"), vigil.WithApprovalTimeout(10*time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := vigil.ContextWithSession(context.Background(), "session-001")
	args := map[string]any{"to": "acct-1", "amount": 1250}
	d, err := c.Ask(ctx, vigil.Action{Tool: "execute_refund", Arguments: args, Context: map[string]any{"amount": 1250}})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Redeem(ctx, d, args); errors.Is(err, vigil.ErrArgumentsMismatch) {
		log.Fatal("the arguments changed since they were approved")
	}
}

// A call site that must not stop the agent when Vigil is unreachable.
func ExampleOnBreakerOpen() {
	c, err := vigil.New("http://localhost:8080", os.Getenv("VIGIL_API_KEY"), vigil.WithBreaker(5, 30*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	d, err := c.Guard(context.Background(), vigil.Action{Tool: "web_search"}, vigil.OnBreakerOpen(vigil.FailOpen))
	if err == nil && d.FailedOpen {
		log.Print("Vigil unreachable: proceeding unchecked")
	}
}

// Report events in the background; Close sends what is buffered.
func ExampleClient_Report() {
	c, err := vigil.New("http://localhost:8080", os.Getenv("VIGIL_API_KEY"),
		vigil.WithAgent("my-agent"), vigil.WithBatch(100, time.Second), vigil.WithMaxQueue(10000, vigil.DropWhenFull))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	err = c.Report(context.Background(), vigil.Event{SessionID: "session-001", Category: "tool_api",
		Payload: map[string]any{"toolName": "web_search", "responseStatus": 200}})
	if errors.Is(err, vigil.ErrQueueFull) {
		log.Print("event dropped: buffer full")
	}
}
