package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// pageNames are the templates/<name>.html files, each rendered inside
// templates/layout.html (with templates/rowform.html, the forms).
var pageNames = []string{"signin", "continue", "error", "desk", "table", "session", "policy", "confirm", "keycreated", "agent"}

type pages map[string]*template.Template

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	},
	"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"join":    strings.Join,
	"str":     func(v any) string { return text(v) },
}

func parsePages() (pages, error) {
	p := pages{}
	for _, n := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/rowform.html", "templates/"+n+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		p[n] = t
	}
	return p, nil
}

// view is what every page template gets.
type view struct {
	Title string
	// Nav is the section the page belongs to (highlighted in the menu).
	Nav     string
	Actor   string
	Role    string
	Tenant  string
	CSRF    string
	Flash   string
	Problem string
	Data    any
}

var navItems = []struct{ Key, Label string }{
	{"desk", "Decision Desk"}, {"sessions", "Sessions"}, {"agents", "Agents"}, {"policies", "Policies"},
	{"verdicts", "Verdicts"}, {"audit", "Audit log"}, {"keys", "Keys"}, {"members", "Members"}, {"channels", "Channels"},
}

func init() {
	funcs["nav"] = func() any { return navItems }
	// refreshes reports whether a page's data asks for a meta refresh
	// (the page after an OIDC sign-in).
	funcs["refreshes"] = func(d any) bool { _, ok := d.(interface{ Refresh() string }); return ok }
}

func (c *Console) render(ec echo.Context, status int, page, title string, data any) error {
	v := view{Title: title, Nav: page, Data: data}
	if s := current(ec); s != nil {
		v.Actor, v.Role, v.Tenant, v.CSRF = s.principal.Actor(), string(s.principal.Role), s.principal.Tenant, s.csrf
	}
	if f, ok := data.(interface{ nav() string }); ok {
		v.Nav = f.nav()
	}
	if fl := ec.QueryParam("flash"); fl != "" && len(fl) < 300 {
		v.Flash = fl
	}
	var b bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&b, "layout", v); err != nil {
		c.log.Error("console: render", "page", page, "error", err)
		return ec.String(http.StatusInternalServerError, "console: the page could not be rendered")
	}
	return ec.HTMLBlob(status, b.Bytes())
}

// fail answers an error: JSON for the script's requests, a page otherwise.
func (c *Console) fail(ec echo.Context, status int, msg string) error {
	if strings.Contains(ec.Request().Header.Get("Accept"), "application/json") || ec.Request().Header.Get(csrfHeader) != "" {
		return ec.JSON(status, map[string]any{"error": map[string]any{"message": msg}})
	}
	return c.render(ec, status, "error", "Error", msg)
}

// apiFail renders a failed API answer (403 keeps the API's own message,
// so the role that was missing is named).
func (c *Console) apiFail(ec echo.Context, r apiResult) error {
	if r.Status == http.StatusUnauthorized {
		ec.SetCookie(cookie(ec, sessionCookie, "", -1))
		return ec.Redirect(http.StatusSeeOther, Prefix+"/sign-in")
	}
	return c.fail(ec, r.Status, r.Problem())
}

// text renders a JSON value for a table cell.
func text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", x), "0"), ".")
	case bool:
		if x {
			return "yes"
		}
		return "no"
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			parts = append(parts, text(e))
		}
		return strings.Join(parts, ", ")
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// field reads a dotted path ("action.tool") of a decoded JSON object; a
// last element "#" is the length of the array before it.
func field(m map[string]any, path string) any {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		if k == "#" {
			a, _ := cur.([]any)
			return float64(len(a))
		}
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}
