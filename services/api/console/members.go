package console

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/auth"
)

// inviteForm is the invite-a-member form, filled with what was submitted.
func inviteForm(p auth.Principal, email, name, role, groups string) rowForm {
	if role == "" {
		role = string(auth.RoleViewer)
	}
	return rowForm{ID: "invite-member", Action: Prefix + "/members/invite", Label: "Invite", Stacked: true, Inputs: []formInput{
		{ID: "member-email", Name: "email", Label: "Email", Type: "email", Required: true, Value: email, Hint: "As the identity provider reports it (verified)."},
		{ID: "member-name", Name: "name", Label: "Name (optional)", Value: name},
		{ID: "member-role", Name: "role", Label: "Role", Options: grantable(p, false, role)},
		{ID: "member-groups", Name: "groups", Label: "Reviewer groups (optional)", Value: groups, Hint: "Separated by commas; policy rules' approvals.groups name them."},
	}}
}

// membersPage lists the tenant's members; whoever may manage members gets
// the invite form and, on the members whose role they may grant, a role
// change, their reviewer groups and a remove step.
func (c *Console) membersPage(ec echo.Context) error {
	return c.membersView(ec, nil, "", http.StatusOK)
}

func (c *Console) membersView(ec echo.Context, form *rowForm, problem string, status int) error {
	p := principal(ec)
	v := tableView{NavKey: "members", Heading: "Members", Status: status, Stack: true, Problem: problem,
		Intro: "People who sign in with the identity provider, their roles and reviewer groups. An invitation binds to the person's provider account at their first sign-in."}
	manage := p.Allows(auth.MembersManage)
	if form != nil && !manage {
		// A refusal of a form the person was not offered (a forged post):
		// the API's words above the list.
		v.Problem = form.Problem
	}
	if manage {
		if form == nil {
			f := inviteForm(p, "", "", "", "")
			form = &f
		}
		v.Extra = []panel{{Heading: "Invite a member", Forms: []rowForm{*form}}}
	}
	var actions func(map[string]any) []rowForm
	if manage {
		actions = func(it map[string]any) []rowForm {
			email, role := text(it["email"]), text(it["role"])
			if !p.Role.Grants(auth.Role(role)) {
				return nil
			}
			path := Prefix + "/members/" + url.PathEscape(email)
			return []rowForm{
				{Action: Prefix + "/members/role", Label: "Change role", ID: "role-" + email, Fields: [][2]string{{"email", email}},
					Inputs: []formInput{{ID: "role-of-" + email, Name: "role", Label: "Role of " + email, Options: grantable(p, false, role)}}},
				{Action: Prefix + "/members/groups", Label: "Set groups", ID: "groups-" + email, Fields: [][2]string{{"email", email}},
					Inputs: []formInput{{ID: "groups-of-" + email, Name: "groups", Label: "Reviewer groups of " + email + " (comma-separated)", Value: text(it["groups"])}}},
				{Action: path + "/remove", Label: "Remove…", Get: true, ID: "remove-" + email},
			}
		}
	}
	return c.listPage(ec, v, "/v1/members", url.Values{}, []column{
		{Header: "Email", Path: "email"}, {Header: "Name", Path: "name"}, {Header: "Role", Path: "role"}, {Header: "Reviewer groups", Path: "groups"},
		{Header: "Status", Path: "status"}, {Header: "Invited", Path: "invitedAt", Time: true}, {Header: "By", Path: "invitedBy"},
	}, actions)
}

// inviteMember invites through POST /v1/members/invite.
func (c *Console) inviteMember(ec echo.Context) error {
	email, name, role, groups := ec.FormValue("email"), ec.FormValue("name"), ec.FormValue("role"), ec.FormValue("groups")
	body := map[string]any{"email": email, "role": role}
	if strings.TrimSpace(name) != "" {
		body["name"] = name
	}
	if gs := splitList(groups); len(gs) > 0 {
		body["groups"] = gs
	}
	r := c.call(ec, http.MethodPost, "/v1/members/invite", body)
	if r.Status == http.StatusUnauthorized {
		return c.apiFail(ec, r)
	}
	if !r.OK() {
		f := inviteForm(principal(ec), email, name, role, groups)
		f.Problem = r.Problem()
		markInvalid(&f, r.invalid(), nil)
		return c.membersView(ec, &f, "", r.Status)
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/members?flash="+url.QueryEscape(strings.TrimSpace(strings.ToLower(email))+" invited as "+role))
}

// setMemberRole changes a role through POST /v1/members/role; a refusal
// (a role the person may not grant, the last owner) is shown above the
// list in the API's words.
func (c *Console) setMemberRole(ec echo.Context) error {
	email, role := ec.FormValue("email"), ec.FormValue("role")
	r := c.call(ec, http.MethodPost, "/v1/members/role", map[string]any{"email": email, "role": role})
	if r.Status == http.StatusUnauthorized {
		return c.apiFail(ec, r)
	}
	if !r.OK() {
		return c.membersView(ec, nil, r.Problem(), r.Status)
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/members?flash="+url.QueryEscape(email+" is now "+role))
}

// setMemberGroups replaces a member's reviewer groups through POST
// /v1/members/groups (an empty field clears them).
func (c *Console) setMemberGroups(ec echo.Context) error {
	email := ec.FormValue("email")
	groups := splitList(ec.FormValue("groups"))
	if groups == nil {
		groups = []string{}
	}
	r := c.call(ec, http.MethodPost, "/v1/members/groups", map[string]any{"email": email, "groups": groups})
	if r.Status == http.StatusUnauthorized {
		return c.apiFail(ec, r)
	}
	if !r.OK() {
		return c.membersView(ec, nil, r.Problem(), r.Status)
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/members?flash="+url.QueryEscape(email+"'s groups: "+strings.Join(groups, ", ")))
}

// removeMemberPage is the confirmation step before a removal.
func (c *Console) removeMemberPage(ec echo.Context) error {
	email := strings.ToLower(ec.Param("email"))
	return c.confirmStep(ec, "/v1/members", "email", email, "member "+email, func(m map[string]any) confirmView {
		return confirmView{NavKey: "members", Heading: "Remove " + email,
			Intro: "They can no longer sign in to this tenant; their past decisions and approvals stay in the record.",
			Facts: [][2]string{{"Email", email}, {"Name", text(m["name"])}, {"Role", text(m["role"])}, {"Reviewer groups", text(m["groups"])},
				{"Status", text(m["status"])}, {"Invited", text(m["invitedAt"])}},
			Form: rowForm{ID: "remove-member", Action: Prefix + "/members/" + url.PathEscape(email) + "/remove", Label: "Remove member", Danger: true}}
	})
}

// removeMember removes through DELETE /v1/members/:email.
func (c *Console) removeMember(ec echo.Context) error {
	email := ec.Param("email")
	return c.deleteThen(ec, "/v1/members/"+url.PathEscape(email), "members", email+" removed")
}
