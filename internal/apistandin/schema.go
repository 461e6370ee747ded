package apistandin

// The v7 data model served by the stand-in: field order, types, NOT NULL
// columns, check constraints (enums), unique indexes, foreign keys and
// navigations, after open-balena-api's src/balena-model.ts.

type kind int

const (
	kSerial kind = iota
	kInt
	kBigInt
	kShortText
	kText
	kBool
	kDate
	kJSON
	kFK
)

type field struct {
	name     string
	kind     kind
	required bool     // NOT NULL column: missing on insert is a database error (500)
	ref      string   // kFK: the referenced table
	enum     []string // check constraint
	readOnly bool     // clients cannot write it (ignored in bodies, like computed or hook-owned fields)
	def      any      // database default on insert (nil: NULL)
}

// nav is a navigation property: to-one through a local foreign key, or
// to-many through a foreign key on the target table.
type nav struct {
	target string
	local  string // to-one: FK field on this table
	remote string // to-many: FK field on the target table pointing here
}

type table struct {
	name      string
	fields    []field
	computed  []string // read-only computed fields, rendered after the stored ones
	unique    [][]string
	navs      map[string]nav
	public    bool // readable without authentication
	postable  bool
	patchable bool
	term      string // SBVR term, used in rule texts
}

func (t *table) field(name string) (field, bool) {
	for _, f := range t.fields {
		if f.name == name {
			return f, true
		}
	}
	return field{}, false
}

func (t *table) isComputed(name string) bool {
	for _, c := range t.computed {
		if c == name {
			return true
		}
	}
	return false
}

type schema struct {
	tables  map[string]*table
	aliases map[string]string // resource synonyms -> canonical table name
}

func (s *schema) resolve(resource string) (*table, bool) {
	if canon, ok := s.aliases[resource]; ok {
		resource = canon
	}
	t, ok := s.tables[resource]
	return t, ok
}

func stamps() []field {
	return []field{
		{name: "created_at", kind: kDate, required: true, readOnly: true},
		{name: "modified_at", kind: kDate, required: true, readOnly: true},
	}
}

func idField() field { return field{name: "id", kind: kSerial, required: true, readOnly: true} }

func with(fs ...[]field) []field {
	var out []field
	for _, f := range fs {
		out = append(out, f...)
	}
	return out
}

func statusEnum() []string {
	return []string{"running", "success", "failed", "error", "cancelled", "interrupted"}
}

func projectTypeEnum() []string {
	return []string{
		"Standard Dockerfile", "project type unavailable", "NodeJS", "node.js", "local deploy",
		"external service", "Dockerfile.template", "dockerfile template", "dockerfile",
		"Could not be detected", "Architecture-specific Dockerfile", "Archicture-specific Dockerfile",
	}
}

func newSchema() *schema {
	ts := []*table{
		{
			name: "application", term: "application", patchable: true,
			fields: with(stamps(), []field{
				idField(),
				{name: "actor", kind: kFK, ref: "actor", required: true, readOnly: true},
				{name: "should_track_latest_release", kind: kBool, required: true, def: true},
				{name: "is_of__class", kind: kShortText, required: true, readOnly: true, enum: []string{"fleet", "block", "app"}},
				{name: "organization", kind: kFK, ref: "organization", required: true, readOnly: true},
				{name: "app_name", kind: kText, required: true, readOnly: true},
				{name: "slug", kind: kShortText, required: true, readOnly: true},
				{name: "is_for__device_type", kind: kFK, ref: "device_type", required: true, readOnly: true},
				{name: "should_be_running__release", kind: kFK, ref: "release"},
				{name: "application_type", kind: kFK, ref: "application_type", required: true, readOnly: true},
				{name: "is_host", kind: kBool, required: true, def: false},
				{name: "is_archived", kind: kBool, required: true, def: false},
				{name: "uuid", kind: kText, required: true, readOnly: true},
				{name: "is_public", kind: kBool, required: true, def: false},
			}),
			unique: [][]string{{"slug"}, {"uuid"}},
			navs: map[string]nav{
				"organization":                    {target: "organization", local: "organization"},
				"is_for__device_type":             {target: "device_type", local: "is_for__device_type"},
				"should_be_running__release":      {target: "release", local: "should_be_running__release"},
				"application_type":                {target: "application_type", local: "application_type"},
				"owns__release":                   {target: "release", remote: "belongs_to__application"},
				"service":                         {target: "service", remote: "application"},
				"application__has__service_name":  {target: "service", remote: "application"},
				"is_directly_accessible_by__user": {target: "user__has_direct_access_to__application"},
			},
		},
		{
			name: "organization", term: "organization",
			fields: with(stamps(), []field{
				idField(),
				{name: "name", kind: kShortText, required: true},
				{name: "handle", kind: kShortText, required: true},
			}),
			unique: [][]string{{"handle"}},
			navs:   map[string]nav{"application": {target: "application", remote: "organization"}},
		},
		{
			name: "device_type", term: "device type", public: true,
			fields: with(stamps(), []field{
				idField(),
				{name: "slug", kind: kShortText, required: true},
				{name: "name", kind: kShortText, required: true},
				{name: "is_of__cpu_architecture", kind: kFK, ref: "cpu_architecture", required: true},
				{name: "logo", kind: kText},
				{name: "contract", kind: kJSON},
				{name: "belongs_to__device_family", kind: kFK, ref: "device_family"},
			}),
			unique: [][]string{{"slug"}},
			navs: map[string]nav{
				"is_of__cpu_architecture":     {target: "cpu_architecture", local: "is_of__cpu_architecture"},
				"supports__cpu_architecture":  {target: "cpu_architecture", local: "is_of__cpu_architecture"},
				"is_default_for__application": {target: "application", remote: "is_for__device_type"},
			},
		},
		{
			name: "cpu_architecture", term: "cpu architecture", public: true,
			fields: with(stamps(), []field{
				idField(),
				{name: "slug", kind: kShortText, required: true},
			}),
			unique: [][]string{{"slug"}},
			navs: map[string]nav{
				"is_supported_by__device_type": {target: "device_type", remote: "is_of__cpu_architecture"},
			},
		},
		{
			name: "application_type", term: "application type", public: true,
			fields: with(stamps(), []field{
				idField(),
				{name: "name", kind: kShortText, required: true},
				{name: "supports_web_url", kind: kBool, required: true},
				{name: "supports_multicontainer", kind: kBool, required: true},
				{name: "supports_gateway_mode", kind: kBool, required: true},
				{name: "needs__os_version_range", kind: kShortText},
				{name: "requires_payment", kind: kBool, required: true},
				{name: "is_legacy", kind: kBool, required: true},
				{name: "slug", kind: kShortText, required: true},
				{name: "description", kind: kText},
				{name: "maximum_device_count", kind: kInt},
			}),
		},
		{
			name: "user", term: "user",
			fields: with(stamps(), []field{
				idField(),
				{name: "actor", kind: kFK, ref: "actor", required: true},
				{name: "username", kind: kShortText, required: true},
			}),
		},
		{
			// The per-user row behind application/is_directly_accessible_by__user;
			// in the stand-in every authenticated user can access every fleet.
			name: "user__has_direct_access_to__application", term: "user has direct access to application",
			fields: []field{
				{name: "id", kind: kBigInt, required: true, readOnly: true},
				{name: "user", kind: kFK, ref: "user", required: true},
				{name: "has_direct_access_to__application", kind: kFK, ref: "application", required: true},
			},
			navs: map[string]nav{
				"user":                              {target: "user", local: "user"},
				"has_direct_access_to__application": {target: "application", local: "has_direct_access_to__application"},
			},
		},
		{
			name: "release", term: "release", postable: true, patchable: true,
			fields: with(stamps(), []field{
				idField(),
				{name: "belongs_to__application", kind: kFK, ref: "application", required: true},
				{name: "commit", kind: kShortText, required: true},
				{name: "composition", kind: kJSON, required: true},
				{name: "status", kind: kShortText, required: true, enum: statusEnum()},
				{name: "source", kind: kShortText, required: true, enum: []string{"cloud", "local"}},
				{name: "build_log", kind: kText},
				{name: "is_invalidated", kind: kBool, required: true, def: false},
				{name: "start_timestamp", kind: kDate, required: true},
				{name: "end_timestamp", kind: kDate},
				{name: "update_timestamp", kind: kDate, required: true},
				{name: "release_version", kind: kShortText},
				{name: "contract", kind: kJSON},
				{name: "is_passing_tests", kind: kBool, required: true, def: true},
				{name: "is_finalized_at__date", kind: kDate},
				{name: "phase", kind: kShortText, enum: []string{"next", "current", "sunset", "end-of-life"}},
				{name: "semver_major", kind: kInt, required: true, readOnly: true, def: int64(0)},
				{name: "semver_minor", kind: kInt, required: true, readOnly: true, def: int64(0)},
				{name: "semver_patch", kind: kInt, required: true, readOnly: true, def: int64(0)},
				{name: "semver_prerelease", kind: kShortText, required: true, readOnly: true, def: ""},
				{name: "semver_build", kind: kShortText, required: true, readOnly: true, def: ""},
				{name: "variant", kind: kShortText, required: true, def: ""},
				{name: "revision", kind: kInt, readOnly: true},
				{name: "known_issue_list", kind: kText},
				{name: "note", kind: kText},
				{name: "invalidation_reason", kind: kText},
			}),
			computed: []string{"is_final", "semver", "raw_version", "version"},
			navs: map[string]nav{
				"belongs_to__application":           {target: "application", local: "belongs_to__application"},
				"release_tag":                       {target: "release_tag", remote: "release"},
				"release__has__tag_key":             {target: "release_tag", remote: "release"},
				"release_image":                     {target: "image__is_part_of__release", remote: "is_part_of__release"},
				"image__is_part_of__release":        {target: "image__is_part_of__release", remote: "is_part_of__release"},
				"contains__image":                   {target: "image__is_part_of__release", remote: "is_part_of__release"},
				"should_be_running_on__application": {target: "application", remote: "should_be_running__release"},
			},
		},
		{
			name: "service", term: "service", postable: true, patchable: true,
			fields: with(stamps(), []field{
				{name: "application", kind: kFK, ref: "application", required: true},
				{name: "service_name", kind: kShortText, required: true},
				idField(),
			}),
			unique: [][]string{{"application", "service_name"}},
			navs: map[string]nav{
				"application":        {target: "application", local: "application"},
				"is_built_by__image": {target: "image", remote: "is_a_build_of__service"},
			},
		},
		{
			name: "image", term: "image", postable: true, patchable: true,
			fields: with(stamps(), []field{
				idField(),
				{name: "start_timestamp", kind: kDate, required: true},
				{name: "end_timestamp", kind: kDate},
				{name: "dockerfile", kind: kText},
				{name: "is_a_build_of__service", kind: kFK, ref: "service", required: true},
				{name: "image_size", kind: kBigInt},
				{name: "is_stored_at__image_location", kind: kShortText, required: true},
				{name: "project_type", kind: kShortText, enum: projectTypeEnum()},
				{name: "error_message", kind: kText},
				{name: "build_log", kind: kText},
				{name: "push_timestamp", kind: kDate},
				{name: "status", kind: kShortText, required: true, enum: statusEnum()},
				{name: "content_hash", kind: kShortText},
				{name: "contract", kind: kJSON},
			}),
			unique: [][]string{{"is_stored_at__image_location"}},
			navs: map[string]nav{
				"is_a_build_of__service":     {target: "service", local: "is_a_build_of__service"},
				"release_image":              {target: "image__is_part_of__release", remote: "image"},
				"image__is_part_of__release": {target: "image__is_part_of__release", remote: "image"},
				"is_part_of__release":        {target: "image__is_part_of__release", remote: "image"},
			},
		},
		{
			name: "image__is_part_of__release", term: "release image", postable: true, patchable: true,
			fields: with(stamps(), []field{
				{name: "image", kind: kFK, ref: "image", required: true},
				{name: "is_part_of__release", kind: kFK, ref: "release", required: true},
				idField(),
			}),
			unique: [][]string{{"image", "is_part_of__release"}},
			navs: map[string]nav{
				"image":                      {target: "image", local: "image"},
				"is_part_of__release":        {target: "release", local: "is_part_of__release"},
				"image_label":                {target: "image_label", remote: "release_image"},
				"image_environment_variable": {target: "image_environment_variable", remote: "release_image"},
			},
		},
		{
			name: "image_label", term: "image label", postable: true, patchable: true,
			fields: with(stamps(), []field{
				{name: "release_image", kind: kFK, ref: "image__is_part_of__release", required: true},
				{name: "label_name", kind: kShortText, required: true},
				idField(),
				{name: "value", kind: kText, required: true},
			}),
			unique: [][]string{{"release_image", "label_name"}},
			navs:   map[string]nav{"release_image": {target: "image__is_part_of__release", local: "release_image"}},
		},
		{
			name: "image_environment_variable", term: "image environment variable", postable: true, patchable: true,
			fields: with(stamps(), []field{
				{name: "release_image", kind: kFK, ref: "image__is_part_of__release", required: true},
				{name: "name", kind: kShortText, required: true},
				idField(),
				{name: "value", kind: kText, required: true},
			}),
			unique: [][]string{{"release_image", "name"}},
			navs:   map[string]nav{"release_image": {target: "image__is_part_of__release", local: "release_image"}},
		},
		{
			name: "release_tag", term: "release tag", postable: true, patchable: true,
			fields: with(stamps(), []field{
				{name: "release", kind: kFK, ref: "release", required: true},
				{name: "tag_key", kind: kShortText, required: true},
				idField(),
				{name: "value", kind: kText, required: true},
			}),
			unique: [][]string{{"release", "tag_key"}},
			navs:   map[string]nav{"release": {target: "release", local: "release"}},
		},
	}
	s := &schema{tables: map[string]*table{}, aliases: map[string]string{
		"release_image":                               "image__is_part_of__release",
		"application__has__service_name":              "service",
		"release__has__tag_key":                       "release_tag",
		"image__is_part_of__release__has__label_name": "image_label",
		"release_image__has__label_name":              "image_label",
		"image__is_part_of__release__has__name":       "image_environment_variable",
		"release_image__has__name":                    "image_environment_variable",
	}}
	for _, t := range ts {
		s.tables[t.name] = t
	}
	return s
}
