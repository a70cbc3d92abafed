#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Provisions a gateway peer the way Contrail's provision_mx.py / provision_bgp.py do, with the
real vnc_api client: the cloud's AS on global-system-config, a bgp-router under the default
routing instance of ip-fabric, and a network with an explicit route target.

Run by tests/bgp_gateways.rs: python3 tests/vnc_provision_gateway.py --port N --peer ADDR
  --peer-asn AS --network NAME --route-target target:AS:N
Needs: pip install contrail-api-client future six requests
"""
import argparse

from vnc_api import vnc_api
from vnc_api.vnc_api import (AddressFamilies, BgpRouter, BgpRouterParams, IpamSubnetType,
                             RouteTargetList, SubnetType, VirtualNetwork, VnSubnetsType)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--peer', required=True)
    ap.add_argument('--peer-asn', type=int, required=True)
    ap.add_argument('--network', required=True)
    ap.add_argument('--route-target', required=True)
    a = ap.parse_args()
    api = vnc_api.VncApi(api_server_host='127.0.0.1', api_server_port=a.port, auth_type='noauth')

    # provision_control.py / provision_mx.py: the AS of the cloud.
    gsc = api.global_system_config_read(fq_name=['default-global-system-config'])
    gsc.set_autonomous_system(64512)
    api.global_system_config_update(gsc)

    # provision_mx.py add_router(): read the default routing instance, create the router under it.
    rt_inst = api.routing_instance_read(
        fq_name=['default-domain', 'default-project', 'ip-fabric', '__default__'])
    params = BgpRouterParams(
        vendor='mx', router_type='router', autonomous_system=a.peer_asn, identifier=a.peer,
        address=a.peer, port=179,
        address_families=AddressFamilies(['route-target', 'inet-vpn', 'e-vpn', 'erm-vpn',
                                          'inet6-vpn']))
    router = BgpRouter(a.network + '-gw', rt_inst, bgp_router_parameters=params)
    uuid = api.bgp_router_create(router)
    back = api.bgp_router_read(id=uuid)
    assert back.get_bgp_router_parameters().get_address() == a.peer, back
    assert back.get_fq_name() == ['default-domain', 'default-project', 'ip-fabric',
                                  '__default__', a.network + '-gw'], back.get_fq_name()

    # A tenant network with the route target an operator gives it for the gateway's VRF.
    ipam = api.network_ipam_read(
        fq_name=['default-domain', 'default-project', 'default-network-ipam'])
    proj = api.project_read(fq_name=['default-domain', 'default-project'])
    vn = VirtualNetwork(a.network, proj)
    vn.add_network_ipam(ipam, VnSubnetsType([IpamSubnetType(subnet=SubnetType('10.30.1.0', 24),
                                                            default_gateway='10.30.1.1')]))
    vn.set_route_target_list(RouteTargetList([a.route_target]))
    vn_uuid = api.virtual_network_create(vn)
    got = api.virtual_network_read(id=vn_uuid).get_route_target_list().get_route_target()
    assert got == [a.route_target], got
    print('OK', uuid, vn_uuid, flush=True)


if __name__ == '__main__':
    main()
