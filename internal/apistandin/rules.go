package apistandin

import (
	"fmt"
	"unicode/utf8"
)

// SBVR rules, checked over the whole database after every write. A
// violation rolls the request back with 400 and the rule's text, as
// pinejs's validateModel does.

const (
	ruleCommitLength  = "It is necessary that each release has a commit that has a Length (Type) that is less than or equal to 40."
	ruleSuccessCommit = "It is necessary that each application that owns a release1 that has a status that is equal to \"success\" " +
		"and has a commit1, owns at most one release2 that has a status that is equal to \"success\" and has a commit2 " +
		"that is equal to the commit1."
	ruleImagePushTimestamp = "It is necessary that each image that has a status that is equal to \"success\", has a push timestamp."
	ruleReleaseVersion     = "It is necessary that each application that owns a release1 that has a status that is equal to \"success\" " +
		"and is not invalidated and has a release version, owns at most one release2 that has a status that is equal to " +
		"\"success\" and is not invalidated and has a release version that is of the release1."
	ruleRevision = "It is necessary that each application that owns a release1 that has a revision, owns at most one release2 " +
		"that has a semver major that is of the release1 and has a semver minor that is of the release1 and has a semver " +
		"patch that is of the release1 and has a semver prerelease that is of the release1 and has a variant that is of " +
		"the release1 and has a revision that is of the release1."
	ruleTarget = "It is necessary that each release that should be running on an application, has a status that is equal " +
		"to \"success\" and belongs to the application."
	ruleInvalidationReason = "It is necessary that each release that has an invalidation reason, is invalidated."
	ruleRevisionPositive   = "It is necessary that each release that has a revision, has a revision that is greater than or equal to 0."
	ruleTagKeyNotEmpty     = "It is necessary that each release tag has a tag key that has a Length (Type) that is greater than 0."
)

// lengthRule is a "Length (Type)" necessity on a text field.
type lengthRule struct {
	table, term, field, fieldTerm string
	min, max                      int // min 0: no lower bound
	optional                      bool
}

func (l lengthRule) text() string {
	bound := ""
	switch {
	case l.min > 0 && l.max > 0:
		bound = fmt.Sprintf("greater than or equal to %d and is less than or equal to %d", l.min, l.max)
	case l.max > 0:
		bound = fmt.Sprintf("less than or equal to %d", l.max)
	default:
		bound = fmt.Sprintf("greater than or equal to %d", l.min)
	}
	if l.optional {
		return fmt.Sprintf("It is necessary that each %s that has %s %s, has %s %s that has a Length (Type) that is %s.",
			l.term, article(l.fieldTerm), l.fieldTerm, article(l.fieldTerm), l.fieldTerm, bound)
	}
	return fmt.Sprintf("It is necessary that each %s has %s %s that has a Length (Type) that is %s.",
		l.term, article(l.fieldTerm), l.fieldTerm, bound)
}

func article(word string) string {
	switch word[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an"
	}
	return "a"
}

// lengthRules are the field length limits listed in the reference (§2).
func lengthRules() []lengthRule {
	return []lengthRule{
		{table: "service", term: "service", field: "service_name", fieldTerm: "service name", min: 1, max: 63},
		{table: "release_tag", term: "release tag", field: "tag_key", fieldTerm: "tag key", max: 164},
		{table: "release_tag", term: "release tag", field: "value", fieldTerm: "value", max: 1000},
		{table: "image_label", term: "image label", field: "value", fieldTerm: "value", max: 300},
		{table: "image_environment_variable", term: "image environment variable", field: "value", fieldTerm: "value", max: 100000},
		{table: "image", term: "image", field: "content_hash", fieldTerm: "content hash", max: 71, optional: true},
		{table: "image", term: "image", field: "error_message", fieldTerm: "error message", max: 300000, optional: true},
		{table: "image", term: "image", field: "build_log", fieldTerm: "build log", max: 1500000, optional: true},
		{table: "image", term: "image", field: "dockerfile", fieldTerm: "dockerfile", max: 1000000, optional: true},
		{table: "release", term: "release", field: "build_log", fieldTerm: "build log", max: 1000000, optional: true},
		{table: "release", term: "release", field: "note", fieldTerm: "note", max: 1000000, optional: true},
		{table: "release", term: "release", field: "known_issue_list", fieldTerm: "known issue list", max: 1000, optional: true},
		{table: "release", term: "release", field: "invalidation_reason", fieldTerm: "invalidation reason", max: 255, optional: true},
		{table: "release", term: "release", field: "release_version", fieldTerm: "release version", max: 81, optional: true},
	}
}

// checkRules returns the first violated rule, or nil.
func checkRules(st *state) *apiError {
	releases := st.rows("release")
	for _, r := range releases {
		if utf8.RuneCountInString(r.str("commit")) > 40 {
			return jsonError(400, ruleCommitLength)
		}
	}
	type appCommit struct {
		app    int64
		commit string
	}
	seenCommit := map[appCommit]bool{}
	for _, r := range releases {
		if r.str("status") != "success" {
			continue
		}
		k := appCommit{r.int("belongs_to__application"), r.str("commit")}
		if seenCommit[k] {
			return jsonError(400, ruleSuccessCommit)
		}
		seenCommit[k] = true
	}
	for _, img := range st.rows("image") {
		if img.str("status") == "success" && img.isNull("push_timestamp") {
			return jsonError(400, ruleImagePushTimestamp)
		}
	}
	seenVersion := map[appCommit]bool{}
	for _, r := range releases {
		if r.str("status") != "success" || r.boolean("is_invalidated") || r.isNull("release_version") {
			continue
		}
		k := appCommit{r.int("belongs_to__application"), r.str("release_version")}
		if seenVersion[k] {
			return jsonError(400, ruleReleaseVersion)
		}
		seenVersion[k] = true
	}
	type revKey struct {
		app                 int64
		major, minor, patch int64
		pre, variant        string
		rev                 int64
	}
	seenRev := map[revKey]bool{}
	for _, r := range releases {
		if r.isNull("revision") {
			continue
		}
		if r.int("revision") < 0 {
			return jsonError(400, ruleRevisionPositive)
		}
		k := revKey{r.int("belongs_to__application"), r.int("semver_major"), r.int("semver_minor"),
			r.int("semver_patch"), r.str("semver_prerelease"), r.str("variant"), r.int("revision")}
		if seenRev[k] {
			return jsonError(400, ruleRevision)
		}
		seenRev[k] = true
	}
	for _, r := range releases {
		if !r.isNull("invalidation_reason") && !r.boolean("is_invalidated") {
			return jsonError(400, ruleInvalidationReason)
		}
	}
	for _, app := range st.rows("application") {
		if app.isNull("should_be_running__release") {
			continue
		}
		rel, ok := st.get("release", app.int("should_be_running__release"))
		if !ok || rel.str("status") != "success" || rel.int("belongs_to__application") != app.id() {
			return jsonError(400, ruleTarget)
		}
	}
	for _, t := range st.rows("release_tag") {
		if t.str("tag_key") == "" {
			return jsonError(400, ruleTagKeyNotEmpty)
		}
	}
	for _, l := range lengthRules() {
		for _, r := range st.rows(l.table) {
			if r.isNull(l.field) {
				continue
			}
			n := utf8.RuneCountInString(r.str(l.field))
			if (l.min > 0 && n < l.min) || (l.max > 0 && n > l.max) {
				return jsonError(400, l.text())
			}
		}
	}
	return nil
}
