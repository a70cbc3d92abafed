#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Drives vrouter-shim with the real vnc_api client through the lifecycle CloudStack drives.

Run by tests/vnc_client.rs: python3 tests/vnc_lifecycle.py --port N
Needs: pip install contrail-api-client future six requests
"""
import argparse
import sys
import uuid

from vnc_api import vnc_api
from vnc_api.exceptions import BadRequest, NoIdError, RefsExistError, HttpError
from vnc_api.vnc_api import (Domain, FloatingIp, FloatingIpPool, InstanceIp, IpamSubnetType,
                             NetworkIpam, NetworkPolicy, PolicyEntriesType, PolicyRuleType,
                             Project, SequenceType, SubnetType, VirtualMachine,
                             VirtualMachineInterface, VirtualNetwork, VirtualNetworkPolicyType,
                             VnSubnetsType, AddressType, PortType, ActionListType)

STEPS = []


def step(msg):
    STEPS.append(msg)
    print('--', msg, flush=True)


def expect_error(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc:
        return
    except Exception as e:  # noqa: BLE001 - report which error came instead
        raise AssertionError('expected %s, got %r' % (exc.__name__, e))
    raise AssertionError('expected %s, call succeeded' % exc.__name__)


def subnet(prefix, plen, gw):
    return VnSubnetsType([IpamSubnetType(subnet=SubnetType(prefix, plen), default_gateway=gw)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, required=True)
    args = ap.parse_args()
    api = vnc_api.VncApi(api_server_host='127.0.0.1', api_server_port=args.port,
                         auth_type='noauth')

    step('defaults exist')
    ipam = api.network_ipam_read(
        fq_name=['default-domain', 'default-project', 'default-network-ipam'])
    proj_default = api.project_read(fq_name=['default-domain', 'default-project'])
    for name in ('ip-fabric', '__link_local__', 'default-virtual-network'):
        assert api.fq_name_to_id('virtual-network', ['default-domain', 'default-project', name])
    api.network_policy_read(
        fq_name=['default-domain', 'default-project', 'default-network-policy'])

    step('domain and project with client-given uuids (echoed)')
    dom_uuid = str(uuid.uuid4())
    dom = Domain('Engineering')
    dom.uuid = dom_uuid
    assert api.domain_create(dom) == dom_uuid
    proj_uuid = str(uuid.uuid4())
    proj = Project('webteam', api.domain_read(fq_name=['default-domain']))
    proj.uuid = proj_uuid
    assert api.project_create(proj) == proj_uuid
    expect_error(RefsExistError, api.project_create, Project('webteam', Domain('default-domain')))

    step('guest network with a subnet')
    vn = VirtualNetwork('tier-web', proj)
    vn.uuid = str(uuid.uuid4())
    vn.add_network_ipam(ipam, subnet('10.20.1.0', 24, '10.20.1.1'))
    assert api.virtual_network_create(vn) == vn.uuid
    vn = api.virtual_network_read(id=vn.uuid)
    sn = vn.get_network_ipam_refs()[0]['attr'].ipam_subnets[0]
    assert sn.subnet.ip_prefix == '10.20.1.0' and sn.subnet.ip_prefix_len == 24
    assert sn.default_gateway == '10.20.1.1'
    assert vn.get_fq_name() == ['default-domain', 'webteam', 'tier-web']

    step('virtual machine, interface with generated MAC')
    vm = VirtualMachine('i-2-10-VM')
    vm.uuid = str(uuid.uuid4())
    api.virtual_machine_create(vm)
    vmi = VirtualMachineInterface('i-2-10-VM-0', parent_obj=vm)
    vmi.uuid = str(uuid.uuid4())
    vmi.set_virtual_network(vn)
    assert api.virtual_machine_interface_create(vmi) == vmi.uuid
    vmi = api.virtual_machine_interface_read(id=vmi.uuid)
    mac = vmi.get_virtual_machine_interface_mac_addresses().mac_address[0]
    u = vmi.uuid
    assert mac == '02:%s:%s:%s:%s:%s' % (u[0:2], u[2:4], u[4:6], u[6:8], u[9:11]), mac

    step('instance IPs: allocated, requested, conflicts')
    iip = InstanceIp('i-2-10-VM-0')
    iip.set_virtual_network(vn)
    iip.set_virtual_machine_interface(vmi)
    iip_uuid = api.instance_ip_create(iip)
    iip = api.instance_ip_read(id=iip_uuid)
    assert iip.get_instance_ip_address() == '10.20.1.2', iip.get_instance_ip_address()
    iip2 = InstanceIp('i-2-10-VM-0b', instance_ip_address='10.20.1.50')
    iip2.set_virtual_network(vn)
    iip2.set_virtual_machine_interface(vmi)
    iip2_uuid = api.instance_ip_create(iip2)
    assert api.instance_ip_read(id=iip2_uuid).get_instance_ip_address() == '10.20.1.50'
    dup = InstanceIp('dup', instance_ip_address='10.20.1.50')
    dup.set_virtual_network(vn)
    expect_error(RefsExistError, api.instance_ip_create, dup)
    gw = InstanceIp('gw', instance_ip_address='10.20.1.1')
    gw.set_virtual_network(vn)
    expect_error(RefsExistError, api.instance_ip_create, gw)
    outside = InstanceIp('outside', instance_ip_address='10.99.0.5')
    outside.set_virtual_network(vn)
    expect_error(BadRequest, api.instance_ip_create, outside)
    bcast = InstanceIp('bcast', instance_ip_address='10.20.1.255')
    bcast.set_virtual_network(vn)
    expect_error(BadRequest, api.instance_ip_create, bcast)

    step('system NIC on ip-fabric keeps any address')
    fabric = api.virtual_network_read(
        fq_name=['default-domain', 'default-project', 'ip-fabric'])
    fip_nic = InstanceIp('s-1-VM-1', instance_ip_address='192.0.2.77')
    fip_nic.set_virtual_network(fabric)
    fab_iip = api.instance_ip_create(fip_nic)
    assert api.instance_ip_read(id=fab_iip).get_instance_ip_address() == '192.0.2.77'

    step('public network, floating IP pool and floating IPs')
    pub = VirtualNetwork('__default_Public__', proj_default)
    pub.uuid = str(uuid.uuid4())
    pub.add_network_ipam(ipam, subnet('198.51.100.0', 24, '198.51.100.1'))
    api.virtual_network_create(pub)
    pool = FloatingIpPool('PublicIpPool', pub)
    pool_uuid = api.floating_ip_pool_create(pool)
    pool = api.floating_ip_pool_read(id=pool_uuid)
    fip = FloatingIp('42', pool)
    fip.uuid = str(uuid.uuid4())
    fip.set_virtual_machine_interface(vmi)
    assert api.floating_ip_create(fip) == fip.uuid
    fip = api.floating_ip_read(id=fip.uuid)
    assert fip.get_floating_ip_address() == '198.51.100.2', fip.get_floating_ip_address()
    fip2 = FloatingIp('43', pool, floating_ip_address='198.51.100.42')
    fip2_uuid = api.floating_ip_create(fip2)
    assert api.floating_ip_read(id=fip2_uuid).get_floating_ip_address() == '198.51.100.42'
    vmi_full = api.virtual_machine_interface_read(
        id=vmi.uuid, fields=['floating_ip_back_refs', 'instance_ip_back_refs'])
    assert len(vmi_full.get_floating_ip_back_refs()) == 1
    assert len(vmi_full.get_instance_ip_back_refs()) == 2

    step('network policy with rules, attached to the network (ref-update)')
    rule = PolicyRuleType(
        direction='<>', protocol='tcp',
        src_addresses=[AddressType(virtual_network='default-domain:webteam:tier-web')],
        src_ports=[PortType(0, 65535)],
        dst_addresses=[AddressType(virtual_network='local')],
        dst_ports=[PortType(80, 80)],
        action_list=ActionListType(simple_action='pass'))
    pol = NetworkPolicy('acl-web', proj, network_policy_entries=PolicyEntriesType([rule]))
    pol.uuid = str(uuid.uuid4())
    api.network_policy_create(pol)
    pol = api.network_policy_read(id=pol.uuid)
    assert pol.get_network_policy_entries().policy_rule[0].dst_ports[0].start_port == 80
    vn = api.virtual_network_read(id=vn.uuid)
    vn.add_network_policy(pol, VirtualNetworkPolicyType(sequence=SequenceType(1, 0)))
    api.virtual_network_update(vn)
    vn = api.virtual_network_read(id=vn.uuid)
    assert vn.get_network_policy_refs()[0]['uuid'] == pol.uuid
    expect_error(RefsExistError, api.network_policy_delete, id=pol.uuid)

    step('reads, lists, filters')
    names = [v['fq_name'] for v in api.virtual_networks_list()['virtual-networks']]
    assert ['default-domain', 'webteam', 'tier-web'] in names
    mine = api.virtual_networks_list(parent_id=proj_uuid)['virtual-networks']
    assert [v['uuid'] for v in mine] == [vn.uuid]
    assert api.virtual_networks_list(count=True)['virtual-networks']['count'] == len(names)
    detail = api.virtual_networks_list(parent_fq_name=['default-domain', 'webteam'], detail=True)
    assert detail[0].get_network_ipam_refs()[0]['attr'].ipam_subnets[0].default_gateway == '10.20.1.1'
    iips = api.instance_ips_list(back_ref_id=[vmi.uuid])['instance-ips']
    assert sorted(i['uuid'] for i in iips) == sorted([iip_uuid, iip2_uuid])
    some = api.virtual_machine_interfaces_list(obj_uuids=[vmi.uuid])['virtual-machine-interfaces']
    assert len(some) == 1
    assert api.id_to_fq_name(vmi.uuid) == ['i-2-10-VM', 'i-2-10-VM-0']
    assert api.fq_name_to_id('virtual-network', ['default-domain', 'webteam', 'tier-web']) == vn.uuid

    step('updates')
    vn = api.virtual_network_read(id=vn.uuid)
    vn.set_display_name('web tier')
    api.virtual_network_update(vn)
    assert api.virtual_network_read(id=vn.uuid).get_display_name() == 'web tier'
    iip = api.instance_ip_read(id=iip_uuid)
    iip.set_instance_ip_address('10.20.1.60')
    api.instance_ip_update(iip)
    assert api.instance_ip_read(id=iip_uuid).get_instance_ip_address() == '10.20.1.60'

    step('error cases')
    expect_error(NoIdError, api.virtual_network_read, id=str(uuid.uuid4()))
    expect_error(NoIdError, api.virtual_network_read, id=vmi.uuid)  # wrong type
    expect_error(NoIdError, api.virtual_network_read,
                 fq_name=['default-domain', 'webteam', 'nope'])
    expect_error(RefsExistError, api.virtual_network_create, VirtualNetwork('tier-web', proj))
    expect_error(RefsExistError, api.virtual_network_delete, id=vn.uuid)
    expect_error(RefsExistError, api.virtual_machine_delete, id=vm.uuid)
    expect_error(RefsExistError, api.project_delete, id=proj_uuid)
    orphan = VirtualNetwork('orphan', Project('no-such-project', Domain('default-domain')))
    expect_error(BadRequest, api.virtual_network_create, orphan)
    expect_error(NoIdError, api.virtual_network_delete, id=str(uuid.uuid4()))

    step('deletes in order, addresses freed')
    api.floating_ip_delete(id=fip.uuid)
    api.floating_ip_delete(id=fip2_uuid)
    api.floating_ip_pool_delete(id=pool_uuid)
    api.virtual_network_delete(id=pub.uuid)
    api.instance_ip_delete(id=iip_uuid)
    api.instance_ip_delete(id=iip2_uuid)
    api.instance_ip_delete(id=fab_iip)
    again = InstanceIp('again')
    again.set_virtual_network(vn)
    again_uuid = api.instance_ip_create(again)
    assert api.instance_ip_read(id=again_uuid).get_instance_ip_address() == '10.20.1.2'
    api.instance_ip_delete(id=again_uuid)
    api.virtual_machine_interface_delete(id=vmi.uuid)
    api.virtual_machine_delete(id=vm.uuid)
    vn = api.virtual_network_read(id=vn.uuid)
    vn.del_network_policy(pol)
    api.virtual_network_update(vn)
    api.network_policy_delete(id=pol.uuid)
    api.virtual_network_delete(id=vn.uuid)
    api.project_delete(id=proj_uuid)
    api.domain_delete(id=dom_uuid)
    expect_error(NoIdError, api.virtual_network_read, id=vn.uuid)
    left = [v['fq_name'][-1] for v in api.virtual_networks_list()['virtual-networks']]
    assert sorted(left) == ['__link_local__', 'default-virtual-network', 'ip-fabric'], left
    print('OK %d steps' % len(STEPS))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (AssertionError, HttpError, NoIdError, BadRequest, RefsExistError) as e:
        print('FAILED at step %r: %r' % (STEPS[-1] if STEPS else None, e), file=sys.stderr)
        raise
