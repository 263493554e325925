# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Shared attribute descriptions; each module states its own support level.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
"""

    ACTIONGROUP_K8S = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/governed.rollback.k8s) or C(group/governed.rollback.rollback) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - governed.rollback.k8s
      - governed.rollback.rollback
"""

    ACTIONGROUP_K8S_POSTGRES = r"""
options: {}
attributes:
  action_group:
    description:
      - Use C(group/governed.rollback.k8s), C(group/governed.rollback.postgres) or C(group/governed.rollback.rollback)
        in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - governed.rollback.k8s
      - governed.rollback.postgres
      - governed.rollback.rollback
"""

    ACTIONGROUP_POSTGRES = r"""
options: {}
attributes:
  action_group:
    description:
      - Use C(group/governed.rollback.postgres) or C(group/governed.rollback.rollback) in C(module_defaults) to set
        defaults for this module.
    support: full
    membership:
      - governed.rollback.postgres
      - governed.rollback.rollback
"""

    ACTIONGROUP_ROLLBACK = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/governed.rollback.rollback) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - governed.rollback.rollback
"""
