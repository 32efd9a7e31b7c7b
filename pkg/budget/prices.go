package budget

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
)

// Price is what a model costs in US dollars per million tokens.
type Price struct {
	Input  float64 `json:"input"`
	Output float64 `json:"output"`
}

// Prices is a per-model price table for cost_usd budgets. A model is
// priced by its exact name, else by the longest entry that prefixes it
// (so "gpt-4o" prices "gpt-4o-2024-08-06"), else by the "default" entry.
// A table without "default" prices unknown models like its most
// expensive entry: an unknown model never looks cheap.
type Prices map[string]Price

// DefaultModel is the entry pricing models the table does not name.
const DefaultModel = "default"

// DefaultPrices is the table used unless the deployment supplies one
// (--budget-prices). Figures are list prices in USD per million tokens;
// check them against your providers' and override where they differ.
func DefaultPrices() Prices {
	return Prices{
		"gpt-4o":           {Input: 2.50, Output: 10.00},
		"gpt-4o-mini":      {Input: 0.15, Output: 0.60},
		"gpt-4.1":          {Input: 2.00, Output: 8.00},
		"gpt-4.1-mini":     {Input: 0.40, Output: 1.60},
		"o3":               {Input: 2.00, Output: 8.00},
		"claude-3-5-haiku": {Input: 0.80, Output: 4.00},
		"claude-sonnet-4":  {Input: 3.00, Output: 15.00},
		"claude-opus-4":    {Input: 15.00, Output: 75.00},
		"gemini-2.5-pro":   {Input: 1.25, Output: 10.00},
		"gemini-2.5-flash": {Input: 0.30, Output: 2.50},
		"mistral-large":    {Input: 2.00, Output: 6.00},
		"llama-3.1-70b":    {Input: 0.88, Output: 0.88},
		DefaultModel:       {Input: 15.00, Output: 75.00},
	}
}

// LoadPrices reads a price table from a JSON file:
// {"model": {"input": 2.5, "output": 10}, …}.
func LoadPrices(path string) (Prices, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("budget prices: %w", err)
	}
	var p Prices
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("budget prices %s: %w", path, err)
	}
	return p, p.Validate()
}

// Validate rejects an empty table and negative or non-finite prices.
func (p Prices) Validate() error {
	if len(p) == 0 {
		return errors.New("budget prices: the table is empty")
	}
	var errs []error
	for m, pr := range p {
		for _, v := range []float64{pr.Input, pr.Output} {
			if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
				errs = append(errs, fmt.Errorf("budget prices: %q: prices must be finite and not negative", m))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// For returns the price of model.
func (p Prices) For(model string) Price {
	if pr, ok := p[model]; ok {
		return pr
	}
	best := -1
	var out Price
	for m, pr := range p {
		if m != DefaultModel && len(m) > best && strings.HasPrefix(model, m) {
			best, out = len(m), pr
		}
	}
	if best >= 0 {
		return out
	}
	if pr, ok := p[DefaultModel]; ok {
		return pr
	}
	for _, pr := range p {
		out.Input, out.Output = max(out.Input, pr.Input), max(out.Output, pr.Output)
	}
	return out
}

// MicroUSD is the cost of t in millionths of a dollar, rounded up so that
// usage is never understated.
func (p Prices) MicroUSD(t Tokens) int64 {
	pr := p.For(t.Model)
	// $/Mtok × tokens = µ$ exactly.
	return int64(math.Ceil(pr.Input*float64(t.Input) + pr.Output*float64(t.Output)))
}
