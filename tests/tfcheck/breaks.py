#!/usr/bin/env python3
"""Breaks a copy of terraform/ in one way, for tests/tfcheck/test.sh.

    breaks.py --list          prints "CASE CHECK" lines: the check that must fail
    breaks.py CASE DIR        applies CASE to the terraform tree copied at DIR

Every edit must match exactly once in the pristine tree, so a change to the
Terraform that makes a case meaningless fails the test instead of passing it.
"""
import os
import sys

# case -> (check that must fail, [(file, old, new)] or callable)
CASES = {
    "parse-error": ("parse", [
        ("modules/edge/main.tf", 'resource "aws_route53_record" "latency" {',
         'resource "aws_route53_record" "latency" {\n  name = = "broken"'),
    ]),
    "undeclared-var": ("references", [
        ("modules/edge/main.tf", "var.health_check_failure_threshold",
         "var.health_check_failure_treshold"),
    ]),
    "undeclared-local": ("references", [
        ("modules/region/main.tf", "name    = local.regional_fqdn", "name    = local.regional_name"),
    ]),
    "undeclared-module": ("references", [
        ("envs/prod/regions/outputs.tf", "module.database_us_east_1.global_writer_endpoint",
         "module.database_us_east1.global_writer_endpoint"),
    ]),
    "unknown-module-output": ("references", [
        ("examples/two-region/outputs.tf", "module.region_eu_west_1.regional_fqdn",
         "module.region_eu_west_1.regional_name"),
    ]),
    "undeclared-resource": ("references", [
        ("modules/region/scaling.tf", "autoscaling_group_name    = aws_autoscaling_group.standby.name\n  policy_type               = \"StepScaling\"",
         "autoscaling_group_name    = aws_autoscaling_group.standbys.name\n  policy_type               = \"StepScaling\""),
    ]),
    "unknown-module-argument": ("module-args", [
        ("examples/two-region/main.tf", "  voter_count     = 2\n", "  voter_count     = 2\n  instance_size   = \"large\"\n"),
    ]),
    "missing-required-argument": ("module-args", [
        ("envs/prod/regions/main.tf",
         '  region          = "eu-west-1"\n  cluster_regions = local.cluster_regions\n',
         '  region          = "eu-west-1"\n'),
    ]),
    "provider-alias-not-passed": ("module-args", [
        ("envs/staging/regions/main.tf", "    aws.accepter  = aws.eu_west_1\n", ""),
    ]),
    "health-check-path": ("health-check", [
        ("modules/region/main.tf", 'path                = "/readyz"', 'path                = "/healthz"'),
    ]),
    "dns-health-check-path": ("health-check", [
        ("modules/edge/main.tf", 'resource_path     = "/readyz"', 'resource_path     = "/"'),
    ]),
    "drain-timeout-below-deregistration": ("drain-timeout", [
        ("examples/two-region/main.tf", "drain_timeout_seconds        = 240", "drain_timeout_seconds        = 10"),
    ]),
    "deregistration-default-above-timeout": ("drain-timeout", [
        ("modules/region/variables.tf",
         'description = "Target group deregistration delay: how long the ALB lets in-flight requests to a leaving node finish."\n  default     = 30',
         'description = "Target group deregistration delay: how long the ALB lets in-flight requests to a leaving node finish."\n  default     = 600'),
    ]),
    "missing-versions-tf": ("standard-files", "rm modules/secrets/versions.tf"),
    "missing-module": ("standard-files", "rm -r modules/database"),
    "unpinned-provider": ("pinned-versions", [
        ("modules/edge/versions.tf", 'version = "~> 6.0"', 'version = ">= 6.0"'),
    ]),
    "unpinned-terraform": ("pinned-versions", [
        ("modules/peering/versions.tf", 'required_version = ">= 1.11.0, < 2.0.0"', 'required_version = ">= 1.11.0"'),
    ]),
    "provider-not-required": ("pinned-versions", [
        ("modules/secrets/main.tf", 'data "aws_region" "current" {}',
         'data "aws_region" "current" {}\n\nresource "random_id" "suffix" {\n  byte_length = 4\n}'),
    ]),
    "untyped-variable": ("variables", [
        ("modules/edge/variables.tf", 'variable "zone_id" {\n  type        = string\n', 'variable "zone_id" {\n'),
    ]),
    "template-variable-not-passed": ("template-vars", [
        ("modules/region/compute.tf", "    region              = var.region\n", ""),
    ]),
    "literal-private-key": ("no-secrets", "key"),
    "literal-password": ("no-secrets", [
        ("modules/database/main.tf",
         "master_password_wo         = local.primary ? ephemeral.aws_secretsmanager_secret_version.master[0].secret_string : null",
         'master_password_wo         = "correct-horse-battery-staple"'),
    ]),
    "literal-dsn-password": ("no-secrets", [
        ("modules/region/templates/cloud-init.yaml.tftpl", "      SECRET_PG=${secret_pg}\n",
         "      SECRET_PG=${secret_pg}\n      PG=postgresql://circa_app:s3cr3tpw@db.internal:5432/circa\n"),
    ]),
}


def main():
    if sys.argv[1:] == ["--list"]:
        for name, (check, _) in CASES.items():
            print(name, check)
        return 0
    if len(sys.argv) != 3 or sys.argv[1] not in CASES:
        print(__doc__, file=sys.stderr)
        return 2
    case, root = sys.argv[1], sys.argv[2]
    _, edits = CASES[case]
    if edits == "rm modules/secrets/versions.tf":
        os.remove(os.path.join(root, "modules/secrets/versions.tf"))
        return 0
    if edits == "rm -r modules/database":
        import shutil
        shutil.rmtree(os.path.join(root, "modules/database"))
        # the callers would fail module-args too; that is fine, standard-files must fail
        return 0
    if edits == "key":
        # assembled at run time so this file itself holds no key header
        header = "-----BEGIN " + "RSA PRIVATE KEY-----"
        with open(os.path.join(root, "modules/secrets/peer.pem"), "w") as f:
            f.write(header + "\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF0qzRlBQ3ZyUvSLTcEl\n-----END RSA PRIVATE KEY-----\n")
        return 0
    for rel, old, new in edits:
        p = os.path.join(root, rel)
        with open(p) as f:
            text = f.read()
        n = text.count(old)
        if n != 1:
            print(f"breaks.py {case}: expected one match in {rel}, found {n}: {old!r}", file=sys.stderr)
            return 3
        with open(p, "w") as f:
            f.write(text.replace(old, new))
    return 0


if __name__ == "__main__":
    sys.exit(main())
