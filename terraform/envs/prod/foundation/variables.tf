variable "alarm_email" {
  type        = string
  description = "Address subscribed to the alarm topics (null: subscribe the pager integration by hand)."
  default     = null

  validation {
    condition     = var.alarm_email == null || can(regex("^[^@ ]+@[^@ ]+$", var.alarm_email))
    error_message = "alarm_email must be null or an e-mail address."
  }
}
