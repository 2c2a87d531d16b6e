# Parameters: each variable below becomes a template parameter (type, default, description and the
# validation prebuildd can read). prebuildd.toml may add to them (here: `project` is immutable).

variable "project" {
  type        = string
  default     = "hello"
  description = "Name of the project checked out in the workspace."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*$", var.project))
    error_message = "use lowercase letters, digits and dashes"
  }
}

variable "setup_seconds" {
  type        = number
  default     = 3
  description = "How long the simulated setup takes."
  validation {
    condition     = var.setup_seconds >= 0 && var.setup_seconds <= 600
    error_message = "between 0 and 600 seconds"
  }
}

variable "editor" {
  type        = string
  default     = "vi"
  description = "The editor set up for the workspace's user; a user may pick another one when claiming a prebuild."
  validation {
    condition     = contains(["vi", "nano", "emacs"], var.editor)
    error_message = "one of vi, nano, emacs"
  }
}

# Workspace facts: prebuildd fills these in (variables named prebuildd_* are never parameters).

variable "prebuildd_transition" {
  type        = string
  default     = "start"
  description = "start, stop or delete: a stop applies with \"stop\" so the agent is stopped (count = 0)."
}

variable "prebuildd_data_dir" {
  type        = string
  description = "A directory on the provisioner host kept across the workspace's builds (per workspace id)."
}

variable "prebuildd_access_url" {
  type    = string
  default = ""
}

variable "prebuildd_agent_token" {
  type        = string
  default     = ""
  sensitive   = true
  description = "The agent's token on a start build; empty on other builds (a claim's, a stop's)."
}

variable "prebuildd_workspace_name" {
  type    = string
  default = ""
}

variable "prebuildd_workspace_owner" {
  type    = string
  default = ""
}

variable "agent_command" {
  type        = string
  default     = "prebuildd"
  description = "How the provisioner host runs the prebuildd CLI (for the workspace agent)."
}
