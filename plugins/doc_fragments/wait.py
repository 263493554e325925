# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Mirrors WAIT in plugins/module_utils/_argspec.py; each module says what "done" means for it.
    DOCUMENTATION = r"""
options:
  wait:
    description:
      - Wait until the change is complete, or has failed, before returning.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait before failing the task.
    type: int
    default: 300
"""
