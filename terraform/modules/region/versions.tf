terraform {
  # 1.11: write-only arguments (used by the database module); 1.9: variable
  # validations that refer to other variables (drain timeout vs deregistration delay).
  required_version = ">= 1.11.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }
}
