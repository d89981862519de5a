# Cluster secrets in Secrets Manager, each replicated to every cluster region
# (a node reads the replica in its own region). Terraform creates the
# containers only: values are written by operators with
# `aws secretsmanager put-secret-value` (terraform/README.md, "First deploy"
# and "Rotating keys"), so no secret ever sits in this repository or in a
# Terraform state.
#
#   jwt       {"alg", "issuer", "audience", "jwks"}: token settings; "jwks"
#             (public keys of an external identity provider) overrides the
#             cluster's own signing key, which is made at bootstrap and
#             replicated with the Raft state.
#   peer-tls  {"ca_pem", "cert_pem", "key_pem"}: TLS for Raft traffic between
#             nodes (nng tls+tcp).
#   pg        {"dsn"}: libpq DSN of the circa_app role on the global writer
#             endpoint, for write-behind.
#   pg-master the Aurora master password (a bare string), read by the
#             database module as an ephemeral value (never stored in state).

locals {
  secrets = {
    jwt       = "JWT settings and optional JWKS of an external identity provider for circa ${var.name}"
    peer-tls  = "CA, certificate and key for circa ${var.name} Raft peer TLS"
    pg        = "PostgreSQL DSN of the circa_app role (write-behind) for circa ${var.name}"
    pg-master = "Aurora PostgreSQL master password for circa ${var.name} (break-glass, migrations)"
  }
}

resource "aws_secretsmanager_secret" "this" {
  for_each = local.secrets

  name                    = "${var.name}/${each.key}"
  description             = each.value
  kms_key_id              = var.kms_key_id
  recovery_window_in_days = var.recovery_window_in_days

  dynamic "replica" {
    for_each = toset(var.replica_regions)
    content {
      region     = replica.value
      kms_key_id = lookup(var.replica_kms_key_ids, replica.value, null)
    }
  }

  tags = merge(var.tags, { "circa-cluster" = var.name })
}

data "aws_iam_policy_document" "read" {
  statement {
    sid     = "ReadCircaSecrets"
    actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = flatten([
      for s in aws_secretsmanager_secret.this : [
        for r in concat([data.aws_region.current.region], var.replica_regions) :
        replace(s.arn, ":${data.aws_region.current.region}:", ":${r}:")
      ]
    ])
  }
}

data "aws_region" "current" {}
