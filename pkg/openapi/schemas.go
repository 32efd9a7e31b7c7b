package openapi

// The schemas of the main bodies. They name the fields clients rely on,
// with their types, and require only what every answer carries; other
// fields are allowed (the Kaplaix, Kaizen and KLA shapes are supersets of
// one another, docs/api.md).

type obj = map[string]any

func str() obj        { return obj{"type": "string"} }
func strOrNull() obj  { return obj{"type": []any{"string", "null"}} }
func integer() obj    { return obj{"type": "integer"} }
func number() obj     { return obj{"type": "number"} }
func boolean() obj    { return obj{"type": "boolean"} }
func stringList() obj { return obj{"type": []any{"array", "null"}, "items": str()} }
func anyObject() obj  { return obj{"type": "object"} }
func enum(vs ...string) obj {
	e := make([]any, len(vs))
	for i, v := range vs {
		e[i] = v
	}
	return obj{"type": "string", "enum": e}
}

func object(required []string, props obj) obj {
	r := make([]any, len(required))
	for i, s := range required {
		r[i] = s
	}
	o := obj{"type": "object", "properties": props}
	if len(r) > 0 {
		o["required"] = r
	}
	return o
}

func components() obj {
	outcome := enum("allow", "warn", "require_approval", "block")
	return obj{
		"securitySchemes": obj{"bearer": obj{"type": "http", "scheme": "bearer", "description": "An API key (vk_…) or a member's OIDC token"}},
		"schemas": obj{
			"ErrorEnvelope": object([]string{"error", "code", "message"}, obj{
				"error": object([]string{"code", "message", "details"}, obj{
					"code":    enum("VALIDATION_ERROR", "AUTHENTICATION_FAILED", "FORBIDDEN", "NOT_FOUND", "CONFLICT", "PAYLOAD_TOO_LARGE", "RATE_LIMITED", "SERVICE_UNAVAILABLE", "INTERNAL_ERROR"),
					"message": str(),
					"details": obj{"type": "array", "items": ref("ErrorDetail")},
				}),
				"code":      enum("invalid_request", "unauthorized", "forbidden", "not_found", "conflict", "payload_too_large", "rate_limited", "internal_error"),
				"message":   str(),
				"requestId": str(),
			}),
			"OTLPStatus":  object([]string{"message"}, obj{"code": integer(), "message": str(), "details": obj{"type": "array"}}),
			"ErrorDetail": object([]string{"path", "code", "message"}, obj{"path": str(), "code": str(), "message": str()}),
			"Object":      anyObject(),
			"Event": object([]string{"eventId", "agentId", "sessionId", "sourceTimestamp"}, obj{
				"eventId": str(), "agentId": str(), "sessionId": str(), "sourceTimestamp": str(),
				"category": str(), "schemaVersion": str(), "payload": anyObject(),
			}),
			"EventBatch":    object([]string{"events"}, obj{"events": obj{"type": "array", "items": ref("Event")}}),
			"EventAccepted": object([]string{"eventId", "status"}, obj{"eventId": str(), "status": enum("accepted", "duplicate")}),
			"Session": object([]string{"sessionId"}, obj{
				"sessionId": str(), "agentId": str(), "eventCount": integer(),
				"events": obj{"type": "array", "items": anyObject()},
			}),
			"AgentRegistration": object([]string{"agentId"}, obj{"agentId": str(), "name": str(), "tools": stringList(), "tags": stringList(), "metadata": anyObject()}),
			"Agent": object([]string{"agentId", "status"}, obj{
				"agentId": str(), "name": str(), "description": str(), "tools": stringList(), "tags": stringList(),
				"metadata": obj{"type": []any{"object", "null"}}, "status": str(), "source": str(),
				"settings": anyObject(), "manifestHash": str(), "manifestSignature": strOrNull(),
				"registeredAt": str(), "updatedAt": str(), "revision": integer(),
			}),
			"Policy":          object([]string{"id"}, obj{"id": str(), "name": str(), "rules": obj{"type": []any{"array", "null"}, "items": anyObject()}}),
			"DecisionRequest": object([]string{"agentId"}, obj{"agentId": str(), "action": obj{"type": []any{"string", "object"}}, "context": anyObject()}),
			"Decision": object([]string{"decisionId", "decision"}, obj{
				"decisionId": str(), "decision": outcome, "reasonCodes": stringList(), "packHash": str(),
			}),
			"Verdict": object([]string{"id"}, obj{"id": str(), "decision": outcome, "reasonCodes": stringList()}),
			"PendingAction": object([]string{"id", "decisionId", "status"}, obj{
				"id": str(), "decisionId": str(), "agentId": str(), "status": str(),
				"required": integer(), "approvals": obj{"type": []any{"array", "null"}, "items": anyObject()},
				"createdAt": str(), "expiresAt": str(),
			}),
			"Key": object([]string{"id", "role"}, obj{"id": str(), "name": str(), "role": enum("owner", "admin", "member", "viewer", "agent")}),
		},
	}
}
